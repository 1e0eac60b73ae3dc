#include "service/media_store.h"

#include <sys/stat.h>

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/service/test_util.h"

namespace avserve::service {
namespace {

using testing::FakeProbe;

class MediaStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<MediaStore> Open(int64_t limit = 1 << 20) {
    auto store = MediaStore::Open({dir_.path() + "/data", dir_.path() + "/root", limit}, FakeProbe);
    EXPECT_TRUE(store.ok()) << store.status();
    return *std::move(store);
  }
  absl::StatusOr<MediaRecord> UploadBytes(MediaStore& store, const std::string& bytes, const std::string& sha = "") {
    auto upload = store.BeginUpload();
    if (!upload.ok()) return upload.status();
    for (size_t i = 0; i < bytes.size(); i += 7) {
      absl::Status st = (*upload)->Write(std::string_view(bytes).substr(i, 7));
      if (!st.ok()) return st;
    }
    return (*upload)->Commit("clip.mp4", 0, sha);
  }
  size_t TmpEntries() const {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir_.path() + "/data/tmp")) ++n;
    return n;
  }
  testing::TempDir dir_;
};

TEST_F(MediaStoreTest, UploadIsAddressedBySha256AndReadableAfterReopen) {
  auto store = Open();
  auto record = UploadBytes(*store, "FAKEMEDIA hello");
  ASSERT_TRUE(record.ok()) << record.status();
  // sha256("FAKEMEDIA hello") computed independently (Python hashlib).
  EXPECT_EQ(record->media_id, "sha256:4bf3ac01d1d089f07fc85f44c9d6cde16f785f8cabba8b5c9485058c0a0f9120");
  EXPECT_EQ(record->size_bytes, 15);
  EXPECT_EQ(record->probe.duration_us, 10'000'000);
  store.reset();
  auto reopened = Open();
  auto again = reopened->Get(record->media_id);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->display_name, "clip.mp4");
  EXPECT_TRUE(std::filesystem::exists(again->file_path));
}

TEST_F(MediaStoreTest, SizeLimitIsEnforcedWhileStreamingAndLeavesNothingBehind) {
  auto store = Open(/*limit=*/20);
  auto record = UploadBytes(*store, "FAKEMEDIA " + std::string(100, 'x'));
  EXPECT_EQ(record.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(TmpEntries(), 0u);
}

TEST_F(MediaStoreTest, CorruptUploadIsRejectedAndNotPublished) {
  auto store = Open();
  auto record = UploadBytes(*store, "not media at all");
  EXPECT_EQ(record.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TmpEntries(), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() + "/data/media"));
}

TEST_F(MediaStoreTest, HashMismatchIsDataLoss) {
  auto store = Open();
  auto record = UploadBytes(*store, "FAKEMEDIA x", std::string(64, '0'));
  EXPECT_EQ(record.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(MediaStoreTest, SameBytesTwiceKeepTheExistingEntryUntouched) {
  auto store = Open();
  auto first = UploadBytes(*store, "FAKEMEDIA same");
  ASSERT_TRUE(first.ok());
  struct stat before {};
  ASSERT_EQ(stat(first->file_path.c_str(), &before), 0);
  auto second = UploadBytes(*store, "FAKEMEDIA same");
  ASSERT_TRUE(second.ok());
  struct stat after {};
  ASSERT_EQ(stat(second->file_path.c_str(), &after), 0);
  EXPECT_EQ(first->media_id, second->media_id);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(TmpEntries(), 0u);
}

TEST_F(MediaStoreTest, RegisterPathIsConfinedAndDeleteKeepsRegisteredFiles) {
  auto store = Open();
  std::string file = dir_.Write("root/a.mp4", "FAKEMEDIA a");
  dir_.Write("outside.mp4", "FAKEMEDIA o");
  auto record = store->RegisterPath("a.mp4");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->source, MediaSourceKind::kPath);
  EXPECT_EQ(store->RegisterPath("../outside.mp4").status().code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(store->Delete(record->media_id).ok());
  EXPECT_EQ(store->Get(record->media_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::exists(file));
}

TEST_F(MediaStoreTest, MalformedAndUnknownIds) {
  auto store = Open();
  EXPECT_EQ(store->Get("sha256:../../etc").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Get("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Get("sha256:" + std::string(64, 'a')).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Delete("sha256:" + std::string(64, 'a')).code(), absl::StatusCode::kNotFound);
}

TEST_F(MediaStoreTest, InterruptedUploadsAreCleanedAtOpen) {
  auto store = Open();
  auto upload = store->BeginUpload();
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Write("FAKEMEDIA partial").ok());
  EXPECT_EQ(TmpEntries(), 1u);
  (void)upload->release();  // simulate a crash: the temporary file stays behind
  store.reset();
  auto reopened = Open();
  EXPECT_EQ(TmpEntries(), 0u);
}

}  // namespace
}  // namespace avserve::service

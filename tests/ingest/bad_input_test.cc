// Bad input never crashes or hangs: each case gives a clear status naming the problem.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ingest/media_reader.h"
#include "tests/ingest/test_media.h"

namespace avserve::ingest {
namespace {

using ::testing::HasSubstr;
using testing::Sample;

// Opens and reads everything; returns the first error (or OK).
absl::Status OpenAndRead(const std::string& path, int64_t* segments = nullptr) {
  auto reader = MediaReader::OpenFile(path, {});
  if (!reader.ok()) return reader.status();
  const testing::Ingested in = testing::IngestAll(std::move(*reader));
  if (segments != nullptr) *segments = static_cast<int64_t>(in.segments.size());
  return in.status;
}

TEST(BadInputTest, TruncatedFileSaysHowFarItGot) {
  int64_t segments = -1;
  const absl::Status s = OpenAndRead(Sample("truncated.mp4"), &segments);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("after "));
  EXPECT_GE(segments, 1);  // the decodable part was delivered first
}

TEST(BadInputTest, CorruptRegionIsReported) {
  const absl::Status s = OpenAndRead(Sample("corrupt.mp4"));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("corrupt"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("s of media decoded"));
}

TEST(BadInputTest, DamagedTransportStreamDecodesWhatSurvives) {
  // Lost TS packets leave a hole in the timeline; whatever the outcome, it is a status, not a crash.
  int64_t segments = 0;
  const absl::Status s = OpenAndRead(Sample("corrupt.ts"), &segments);
  EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kDataLoss) << s;
  EXPECT_GE(segments, 1);
}

TEST(BadInputTest, RandomBytes) {
  const absl::Status s = OpenAndRead(Sample("random.bin"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("cannot open media"));
}

TEST(BadInputTest, ZeroBytes) {
  const absl::Status s = OpenAndRead(Sample("empty.bin"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("empty"));
  auto bytes = MediaReader::OpenBytes(MakeMemoryByteSource({}), {});
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bytes.status().message()), HasSubstr("empty"));
}

TEST(BadInputTest, MissingFile) {
  const absl::Status s = OpenAndRead(testing::SamplesDir() + "/does_not_exist.mp4");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
}

TEST(BadInputTest, NoAudioOrVideoStream) {
  const absl::Status s = OpenAndRead(Sample("nostreams.srt"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("no audio or video stream"));
}

TEST(BadInputTest, AbsurdDimensionsAreRefusedBeforeAllocating) {
  const absl::Status s = OpenAndRead(Sample("huge.y4m"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("30000x30000"));
}

TEST(BadInputTest, AbsurdDuration) {
  const absl::Status s = OpenAndRead(Sample("long_duration.mp4"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("duration"));
}

TEST(BadInputTest, UnsupportedCodec) {
  const absl::Status s = OpenAndRead(Sample("unsupported.avi"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("unsupported video codec"));
}

TEST(BadInputTest, BadOptions) {
  IngestOptions options;
  options.fps = 0;
  EXPECT_EQ(MediaReader::OpenFile(Sample("cfr30.mp4"), options).status().code(), absl::StatusCode::kInvalidArgument);
  options.fps = 1;
  options.frame_budget = 100;
  EXPECT_EQ(MediaReader::OpenFile(Sample("cfr30.mp4"), options).status().code(), absl::StatusCode::kInvalidArgument);
  options.frame_budget = 70;
  options.use_video = false;  // cfr30.mp4 has no audio: nothing left
  EXPECT_EQ(MediaReader::OpenFile(Sample("cfr30.mp4"), options).status().code(), absl::StatusCode::kInvalidArgument);
}

// An upload that fails half way reports the upload's error.
class FailingSource : public ByteSource {
 public:
  explicit FailingSource(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  absl::StatusOr<size_t> Read(uint8_t* dst, size_t n) override {
    if (pos_ >= bytes_.size() / 2) return absl::CancelledError("client went away");
    const size_t take = std::min(n, std::min<size_t>(4096, bytes_.size() / 2 - pos_));
    std::copy(bytes_.begin() + pos_, bytes_.begin() + pos_ + take, dst);
    pos_ += take;
    return take;
  }

 private:
  std::vector<uint8_t> bytes_;
  size_t pos_ = 0;
};

TEST(BadInputTest, FailingUploadReportsTheSourceError) {
  const std::string path = Sample("offset.ts");  // streamable: opens from the first half
  auto reader = MediaReader::OpenBytes(std::make_unique<FailingSource>(testing::ReadBytes(path)), {});
  absl::Status s = reader.status();
  if (reader.ok()) s = testing::IngestAll(std::move(*reader)).status;
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.ToString(), HasSubstr("client went away"));
}

TEST(BadInputTest, TruncatedBytesNeverCrash) {
  // Every prefix length of a small file, in memory: a status or segments, never a crash or hang.
  const std::vector<uint8_t> bytes = testing::ReadBytes(Sample("cfr30.mp4"));
  for (size_t len = 0; len < bytes.size(); len += bytes.size() / 23 + 1) {
    auto reader = MediaReader::OpenBytes(
        MakeMemoryByteSource(std::vector<uint8_t>(bytes.begin(), bytes.begin() + len)), {});
    if (reader.ok()) testing::IngestAll(std::move(*reader));
  }
}

}  // namespace
}  // namespace avserve::ingest

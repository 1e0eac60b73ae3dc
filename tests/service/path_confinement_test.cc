#include "service/path_confinement.h"

#include <unistd.h>

#include <filesystem>

#include "gtest/gtest.h"
#include "tests/service/test_util.h"

namespace avserve::service {
namespace {

class PathConfinementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    std::filesystem::create_directories(root_ + "/sub");
    dir_.Write("root/sub/clip.mp4", "x");
    dir_.Write("secret.txt", "s");
  }
  testing::TempDir dir_;
  std::string root_;
};

TEST_F(PathConfinementTest, ResolvesRelativePathInsideRoot) {
  auto p = ResolveUnderRoot(root_, "sub/clip.mp4");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, std::filesystem::canonical(root_ + "/sub/clip.mp4").string());
}

TEST_F(PathConfinementTest, AcceptsAbsolutePathInsideRoot) {
  EXPECT_TRUE(ResolveUnderRoot(root_, root_ + "/sub/clip.mp4").ok());
}

TEST_F(PathConfinementTest, RejectsDotDotEvenWhenItWouldStayInside) {
  EXPECT_EQ(ResolveUnderRoot(root_, "sub/../sub/clip.mp4").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveUnderRoot(root_, "../secret.txt").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(PathConfinementTest, RejectsAbsolutePathOutsideRoot) {
  EXPECT_EQ(ResolveUnderRoot(root_, dir_.path() + "/secret.txt").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveUnderRoot(root_, "/etc/passwd").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(PathConfinementTest, RejectsSymlinkEscapes) {
  ASSERT_EQ(symlink((dir_.path() + "/secret.txt").c_str(), (root_ + "/link.txt").c_str()), 0);
  ASSERT_EQ(symlink(dir_.path().c_str(), (root_ + "/up").c_str()), 0);
  EXPECT_EQ(ResolveUnderRoot(root_, "link.txt").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ResolveUnderRoot(root_, "up/secret.txt").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(PathConfinementTest, FollowsSymlinksThatStayInside) {
  ASSERT_EQ(symlink((root_ + "/sub/clip.mp4").c_str(), (root_ + "/alias.mp4").c_str()), 0);
  EXPECT_TRUE(ResolveUnderRoot(root_, "alias.mp4").ok());
}

TEST_F(PathConfinementTest, ReportsMissingFilesDirectoriesAndEmptyPaths) {
  EXPECT_EQ(ResolveUnderRoot(root_, "nope.mp4").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ResolveUnderRoot(root_, "sub").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveUnderRoot(root_, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveUnderRoot(root_, std::string("a\0b", 3)).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace avserve::service

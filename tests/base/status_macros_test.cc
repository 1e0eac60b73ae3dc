#include "engine/base/status_macros.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace avserve {
namespace {

absl::StatusOr<std::unique_ptr<int>> MakeInt(bool ok) {
  if (!ok) return absl::InvalidArgumentError("no int");
  return std::make_unique<int>(7);
}

absl::Status UseAssign(bool ok, int* out) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> v, MakeInt(ok));
  *out = *v;
  return absl::OkStatus();
}

absl::Status UseReturn(bool ok, int* calls) {
  RETURN_IF_ERROR(ok ? absl::OkStatus() : absl::NotFoundError("missing"));
  ++*calls;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, AssignOrReturnMovesValueOut) {
  int out = 0;
  ASSERT_TRUE(UseAssign(true, &out).ok());
  EXPECT_EQ(out, 7);
}

TEST(StatusMacrosTest, AssignOrReturnPropagatesError) {
  int out = 0;
  absl::Status s = UseAssign(false, &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "no int");
  EXPECT_EQ(out, 0);
}

TEST(StatusMacrosTest, ReturnIfErrorStopsBeforeRestOfFunction) {
  int calls = 0;
  EXPECT_TRUE(UseReturn(true, &calls).ok());
  EXPECT_EQ(UseReturn(false, &calls).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace avserve

// SHA-256 content hashes: media ids are "sha256:<64 lowercase hex>".
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace avserve::service {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view bytes);
  std::string FinalHex();  // 64 lowercase hex digits; call once

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Hash of a whole file, read in blocks (bounded memory).
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

inline constexpr std::string_view kMediaIdPrefix = "sha256:";
std::string MediaIdFromHex(std::string_view hex);
// True for exactly "sha256:" + 64 lowercase hex digits (so an id can name a directory safely).
bool IsValidMediaId(std::string_view media_id);
// The hex part of a valid id.
std::string_view MediaIdHex(std::string_view media_id);

}  // namespace avserve::service

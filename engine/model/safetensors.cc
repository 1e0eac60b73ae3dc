#include "engine/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace avserve::engine {
namespace {

using Json = nlohmann::json;
constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // safetensors' own limit

absl::StatusOr<DType> ParseDType(const std::string& s) {
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  if (s == "F32") return DType::kF32;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", s, " (BF16, F16, F32 only)"));
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Parses one header entry {"dtype", "shape", "data_offsets"} against the data section.
absl::StatusOr<TensorEntry> ParseEntry(const std::string& name, const Json& e, const uint8_t* data,
                                       size_t data_size, const std::string& path) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", name, ": ", why));
  };
  if (!e.is_object() || !e.contains("dtype") || !e["dtype"].is_string() || !e.contains("shape") ||
      !e["shape"].is_array() || !e.contains("data_offsets") || !e["data_offsets"].is_array() ||
      e["data_offsets"].size() != 2) {
    return bad("malformed header entry");
  }
  TensorEntry t;
  t.name = name;
  t.file = path;
  absl::StatusOr<DType> dt = ParseDType(e["dtype"].get<std::string>());
  if (!dt.ok()) return bad(std::string(dt.status().message()));
  t.dtype = *dt;
  uint64_t numel = 1;
  for (const Json& d : e["shape"]) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) return bad("bad shape");
    t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    numel *= d.get<uint64_t>();
    if (numel > (uint64_t{1} << 40)) return bad("bad shape");
  }
  const Json& off = e["data_offsets"];
  if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) return bad("bad data_offsets");
  const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end || end > data_size) {
    return bad(absl::StrCat("data [", begin, ", ", end, ") beyond the file's ", data_size,
                            " data bytes (truncated file?)"));
  }
  if (end - begin != numel * DTypeSize(t.dtype)) return bad("byte size does not match shape and dtype");
  if (reinterpret_cast<uintptr_t>(data + begin) % DTypeSize(t.dtype) != 0) return bad("misaligned data");
  t.data = data + begin;
  t.bytes = end - begin;
  return t;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": empty or unreadable file"));
  }
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping stays valid
  if (p == MAP_FAILED) return absl::InternalError(absl::StrCat("mmap ", path, ": ", std::strerror(errno)));
  return std::unique_ptr<MappedFile>(
      new MappedFile(path, static_cast<const uint8_t*>(p), static_cast<size_t>(st.st_size)));
}

MappedFile::~MappedFile() { ::munmap(const_cast<uint8_t*>(data_), size_); }

absl::Status Checkpoint::AddFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() < 8) return absl::InvalidArgumentError(absl::StrCat(path, ": truncated header"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, file->data(), 8);  // little-endian hosts only (x86-64, arm64)
  if (header_len > kMaxHeaderBytes || header_len > file->size() - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " exceeds the file (truncated or not safetensors)"));
  }
  const char* hdr = reinterpret_cast<const char*>(file->data() + 8);
  Json j = Json::parse(hdr, hdr + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": malformed JSON header"));
  }
  const uint8_t* data = file->data() + 8 + header_len;
  const size_t data_size = file->size() - 8 - header_len;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ASSIGN_OR_RETURN(TensorEntry t, ParseEntry(it.key(), it.value(), data, data_size, path));
    if (tensors_.count(t.name)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", t.name, " also in ",
                                                     tensors_[t.name].file));
    }
    tensors_.emplace(t.name, std::move(t));
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  const std::string index = dir + "/model.safetensors.index.json";
  if (!FileExists(index)) {
    RETURN_IF_ERROR(ckpt->AddFile(dir + "/model.safetensors"));
    return ckpt;
  }
  std::ifstream in(index);
  std::stringstream ss;
  ss << in.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(index, ": malformed (no weight_map object)"));
  }
  std::set<std::string> shards;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string() || it.value().get<std::string>().find('/') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(index, ": bad shard name for ", it.key()));
    }
    shards.insert(it.value().get<std::string>());
  }
  for (const std::string& shard : shards) RETURN_IF_ERROR(ckpt->AddFile(dir + "/" + shard));
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    const TensorEntry* t = ckpt->Find(it.key());
    const std::string want = dir + "/" + it.value().get<std::string>();
    if (t == nullptr || t->file != want) {
      return absl::InvalidArgumentError(absl::StrCat(index, ": tensor ", it.key(), " not found in ", want));
    }
  }
  return ckpt;
}

const TensorEntry* Checkpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

}  // namespace avserve::engine

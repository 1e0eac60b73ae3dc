#include "service/media_store.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "service/file_util.h"
#include "service/path_confinement.h"

namespace avserve::service {
namespace {

using nlohmann::json;

json ProbeToJson(const ingest::MediaProbe& p) {
  return json{{"container", p.container},         {"duration_us", p.duration_us},
              {"start_us", p.start_us},           {"has_video", p.has_video},
              {"video_codec", p.video_codec},     {"width", p.width},
              {"height", p.height},               {"rotation_deg", p.rotation_deg},
              {"avg_frame_rate", p.avg_frame_rate}, {"has_audio", p.has_audio},
              {"audio_codec", p.audio_codec},     {"audio_sample_rate_hz", p.audio_sample_rate_hz},
              {"audio_channels", p.audio_channels}};
}

ingest::MediaProbe ProbeFromJson(const json& j) {
  ingest::MediaProbe p;
  p.container = j.value("container", "");
  p.duration_us = j.value("duration_us", int64_t{0});
  p.start_us = j.value("start_us", int64_t{0});
  p.has_video = j.value("has_video", false);
  p.video_codec = j.value("video_codec", "");
  p.width = j.value("width", 0);
  p.height = j.value("height", 0);
  p.rotation_deg = j.value("rotation_deg", 0);
  p.avg_frame_rate = j.value("avg_frame_rate", 0.0);
  p.has_audio = j.value("has_audio", false);
  p.audio_codec = j.value("audio_codec", "");
  p.audio_sample_rate_hz = j.value("audio_sample_rate_hz", 0);
  p.audio_channels = j.value("audio_channels", 0);
  return p;
}

std::string RecordToJson(const MediaRecord& r) {
  json j{{"media_id", r.media_id},
         {"source", r.source == MediaSourceKind::kUpload ? "upload" : "path"},
         {"size_bytes", r.size_bytes},
         {"display_name", r.display_name},
         {"file_path", r.source == MediaSourceKind::kPath ? r.file_path : ""},
         {"probe", ProbeToJson(r.probe)},
         {"created_unix_ms", r.created_unix_ms}};
  return j.dump();
}

}  // namespace

// --- PendingUpload --------------------------------------------------------------------------------

PendingUpload::PendingUpload(MediaStore* store, std::string temp_path, int fd)
    : store_(store), temp_path_(std::move(temp_path)), fd_(fd) {}

PendingUpload::~PendingUpload() {
  if (fd_ >= 0) close(fd_);
  if (!committed_) unlink(temp_path_.c_str());
}

absl::Status PendingUpload::Write(std::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError("upload already finished");
  if (bytes_written_ + static_cast<int64_t>(bytes.size()) > store_->max_upload_bytes()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("upload exceeds the server's limit of ", store_->max_upload_bytes(), " bytes"));
  }
  RETURN_IF_ERROR(WriteAll(fd_, bytes));
  hash_.Update(bytes);
  bytes_written_ += static_cast<int64_t>(bytes.size());
  return absl::OkStatus();
}

absl::StatusOr<MediaRecord> PendingUpload::Commit(const std::string& display_name, int64_t expected_size,
                                                  const std::string& expected_sha256_hex) {
  if (fd_ < 0) return absl::FailedPreconditionError("upload already finished");
  if (bytes_written_ == 0) return absl::InvalidArgumentError("upload is empty");
  if (expected_size > 0 && expected_size != bytes_written_) {
    return absl::DataLossError(absl::StrCat("upload size mismatch: header says ", expected_size,
                                            " bytes, received ", bytes_written_));
  }
  std::string hex = hash_.FinalHex();
  if (!expected_sha256_hex.empty() && expected_sha256_hex != hex) {
    return absl::DataLossError("upload sha256 mismatch: the bytes received differ from the header's hash");
  }
  int rc = fsync(fd_);
  close(fd_);
  fd_ = -1;
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync failed: ", std::strerror(errno)));
  auto probe = store_->prober_(temp_path_);
  if (!probe.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("upload is not playable media: ", probe.status().message()));
  }
  MediaRecord record;
  record.media_id = MediaIdFromHex(hex);
  record.source = MediaSourceKind::kUpload;
  record.size_bytes = bytes_written_;
  record.display_name = display_name.substr(0, 256);
  record.probe = *std::move(probe);
  record.created_unix_ms = NowUnixMs();
  bool consumed = false;
  auto published = store_->Publish(std::move(record), temp_path_, &consumed);
  committed_ = consumed;  // otherwise the destructor removes the duplicate bytes
  return published;
}

// --- MediaStore -----------------------------------------------------------------------------------

MediaStore::MediaStore(MediaStoreOptions options, MediaProber prober)
    : options_(std::move(options)), prober_(std::move(prober)) {}

absl::StatusOr<std::unique_ptr<MediaStore>> MediaStore::Open(const MediaStoreOptions& options,
                                                             MediaProber prober) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir is required");
  RETURN_IF_ERROR(RemoveTree(options.data_dir + "/tmp"));
  RETURN_IF_ERROR(MakeDirs(options.data_dir + "/tmp"));
  RETURN_IF_ERROR(MakeDirs(options.data_dir + "/media"));
  return std::unique_ptr<MediaStore>(new MediaStore(options, std::move(prober)));
}

std::string MediaStore::EntryDir(std::string_view hex) const {
  return options_.data_dir + "/media/" + std::string(hex);
}

absl::StatusOr<std::unique_ptr<PendingUpload>> MediaStore::BeginUpload() {
  std::string templ = options_.data_dir + "/tmp/upload-XXXXXX";
  int fd = mkostemp(templ.data(), O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create upload file: ", std::strerror(errno)));
  return std::unique_ptr<PendingUpload>(new PendingUpload(this, templ, fd));
}

absl::StatusOr<MediaRecord> MediaStore::Publish(MediaRecord record, const std::string& data_file,
                                                bool* consumed) {
  *consumed = false;
  std::string hex(MediaIdHex(record.media_id));
  std::lock_guard<std::mutex> lock(mu_);
  // Same bytes already known: keep the existing entry untouched (it may be in use).
  if (std::filesystem::exists(EntryDir(hex) + "/meta.json")) return LoadRecord(hex);
  std::string staging = options_.data_dir + "/tmp/entry-XXXXXX";
  if (mkdtemp(staging.data()) == nullptr) return absl::InternalError("cannot create staging directory");
  if (!data_file.empty()) {
    if (rename(data_file.c_str(), (staging + "/data").c_str()) != 0) {
      RemoveTree(staging).IgnoreError();
      return absl::InternalError(absl::StrCat("cannot stage upload: ", std::strerror(errno)));
    }
    *consumed = true;
    record.file_path = EntryDir(hex) + "/data";
  }
  absl::Status status = WriteFileAtomically(staging + "/meta.json", RecordToJson(record));
  if (status.ok()) status = FsyncPath(staging);
  if (status.ok() && rename(staging.c_str(), EntryDir(hex).c_str()) != 0) {
    status = absl::InternalError(absl::StrCat("cannot publish media: ", std::strerror(errno)));
  }
  if (!status.ok()) {
    RemoveTree(staging).IgnoreError();
    return status;
  }
  RETURN_IF_ERROR(FsyncPath(options_.data_dir + "/media"));
  cache_[record.media_id] = record;
  return record;
}

MediaRecord RecordFromJson(const nlohmann::json& j, const std::string& id);  // below

absl::StatusOr<MediaRecord> MediaStore::LoadRecord(std::string_view hex) {
  std::string id = MediaIdFromHex(hex);
  if (auto it = cache_.find(id); it != cache_.end()) return it->second;
  auto text = ReadFile(EntryDir(hex) + "/meta.json", 1 << 20);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) return absl::NotFoundError(absl::StrCat("unknown media id ", id));
    return text.status();
  }
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::DataLossError(absl::StrCat("corrupt metadata for ", id));
  MediaRecord r;
  try {
    r = RecordFromJson(j, id);
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("corrupt metadata for ", id, ": ", e.what()));
  }
  r.file_path = r.source == MediaSourceKind::kPath ? r.file_path : EntryDir(hex) + "/data";
  cache_[id] = r;
  return r;
}

MediaRecord RecordFromJson(const nlohmann::json& j, const std::string& id) {
  MediaRecord r;
  r.media_id = id;
  r.source = j.value("source", "upload") == "path" ? MediaSourceKind::kPath : MediaSourceKind::kUpload;
  r.size_bytes = j.value("size_bytes", int64_t{0});
  r.display_name = j.value("display_name", "");
  r.file_path = j.value("file_path", "");
  if (j.contains("probe") && j["probe"].is_object()) r.probe = ProbeFromJson(j["probe"]);
  r.created_unix_ms = j.value("created_unix_ms", int64_t{0});
  return r;
}

absl::StatusOr<MediaRecord> MediaStore::RegisterPath(const std::string& user_path) {
  if (options_.media_root.empty()) {
    return absl::FailedPreconditionError("path registration is disabled (the server has no --media-root)");
  }
  ASSIGN_OR_RETURN(std::string real, ResolveUnderRoot(options_.media_root, user_path));
  ASSIGN_OR_RETURN(std::string hex, Sha256OfFile(real));
  auto probe = prober_(real);
  if (!probe.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("file is not playable media: ", probe.status().message()));
  }
  MediaRecord record;
  record.media_id = MediaIdFromHex(hex);
  record.source = MediaSourceKind::kPath;
  record.size_bytes = static_cast<int64_t>(std::filesystem::file_size(real));
  record.display_name = user_path.substr(0, 256);
  record.file_path = real;
  record.probe = *std::move(probe);
  record.created_unix_ms = NowUnixMs();
  bool consumed = false;
  return Publish(std::move(record), /*data_file=*/"", &consumed);
}

absl::StatusOr<MediaRecord> MediaStore::Get(std::string_view media_id) {
  if (!IsValidMediaId(media_id)) {
    return absl::InvalidArgumentError("malformed media id (expected sha256:<64 lowercase hex>)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  return LoadRecord(MediaIdHex(media_id));
}

absl::Status MediaStore::Delete(std::string_view media_id) {
  if (!IsValidMediaId(media_id)) {
    return absl::InvalidArgumentError("malformed media id (expected sha256:<64 lowercase hex>)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::string hex(MediaIdHex(media_id));
  RETURN_IF_ERROR(LoadRecord(hex).status());
  cache_.erase(std::string(media_id));
  // Move out of media/ first (atomic), then delete at leisure: readers never see half an entry.
  std::string graveyard = options_.data_dir + "/tmp/deleted-XXXXXX";
  if (mkdtemp(graveyard.data()) == nullptr) return absl::InternalError("cannot create tmp directory");
  if (rename(EntryDir(hex).c_str(), (graveyard + "/entry").c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot delete media: ", std::strerror(errno)));
  }
  return RemoveTree(graveyard);
}

}  // namespace avserve::service

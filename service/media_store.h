// The server's media catalogue: uploaded bytes and registered paths, addressed by content hash.
//
// Layout under the data directory (Note [Media store durability]):
//   media/<sha256 hex>/meta.json   what GetMedia returns (+ the file path for registered media)
//   media/<sha256 hex>/data        the uploaded bytes (uploads only)
//   tmp/                           uploads in flight and entries being published; emptied at start
// An entry appears by rename(2) of a complete, fsynced directory from tmp/, so a crash leaves either
// no entry or a whole one, and an existing entry is never rewritten.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/media_types.h"
#include "service/content_hash.h"

namespace avserve::service {

enum class MediaSourceKind { kUpload, kPath };

struct MediaRecord {
  std::string media_id;           // "sha256:<hex>"
  MediaSourceKind source = MediaSourceKind::kUpload;
  int64_t size_bytes = 0;
  std::string display_name;
  std::string file_path;          // the bytes to ingest: data file or the registered real path
  ingest::MediaProbe probe;
  int64_t created_unix_ms = 0;
};

// Opens media and reports what it contains; INVALID_ARGUMENT when no demuxer accepts it.
using MediaProber = std::function<absl::StatusOr<ingest::MediaProbe>(const std::string& path)>;

struct MediaStoreOptions {
  std::string data_dir;           // created if missing
  std::string media_root;         // RegisterPath confinement; empty disables RegisterPath
  int64_t max_upload_bytes = int64_t{2} << 30;
};

class MediaStore;

// One upload in progress: bytes go to a temporary file and are hashed as they arrive.
// Destroying an uncommitted upload removes its temporary file.
class PendingUpload {
 public:
  ~PendingUpload();
  PendingUpload(const PendingUpload&) = delete;
  PendingUpload& operator=(const PendingUpload&) = delete;

  // RESOURCE_EXHAUSTED as soon as the total passes the store's limit (nothing more is written).
  absl::Status Write(std::string_view bytes);
  int64_t bytes_written() const { return bytes_written_; }
  // Checks the optional expectations (size 0 / empty hash = unchecked), probes, publishes.
  absl::StatusOr<MediaRecord> Commit(const std::string& display_name, int64_t expected_size,
                                     const std::string& expected_sha256_hex);

 private:
  friend class MediaStore;
  PendingUpload(MediaStore* store, std::string temp_path, int fd);

  MediaStore* store_;
  std::string temp_path_;
  int fd_ = -1;
  int64_t bytes_written_ = 0;
  Sha256 hash_;
  bool committed_ = false;
};

class MediaStore {
 public:
  // Creates the directories and removes leftovers of interrupted uploads.
  static absl::StatusOr<std::unique_ptr<MediaStore>> Open(const MediaStoreOptions& options, MediaProber prober);

  absl::StatusOr<std::unique_ptr<PendingUpload>> BeginUpload();
  // Confined to media_root (see ResolveUnderRoot); the file is hashed and probed, then recorded.
  absl::StatusOr<MediaRecord> RegisterPath(const std::string& user_path);
  absl::StatusOr<MediaRecord> Get(std::string_view media_id);
  // NOT_FOUND for unknown ids; the bytes of uploads are removed, registered files are left alone.
  absl::Status Delete(std::string_view media_id);

  int64_t max_upload_bytes() const { return options_.max_upload_bytes; }

 private:
  friend class PendingUpload;
  MediaStore(MediaStoreOptions options, MediaProber prober);

  // Moves `data_file` (may be empty: registered path) and a meta.json into media/<hex> atomically.
  // *consumed tells whether data_file was moved (false when the entry already existed).
  absl::StatusOr<MediaRecord> Publish(MediaRecord record, const std::string& data_file, bool* consumed);
  absl::StatusOr<MediaRecord> LoadRecord(std::string_view hex);
  std::string EntryDir(std::string_view hex) const;

  MediaStoreOptions options_;
  MediaProber prober_;
  std::mutex mu_;  // guards cache_ and serializes Publish/Delete
  std::map<std::string, MediaRecord, std::less<>> cache_;
};

}  // namespace avserve::service

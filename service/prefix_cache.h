// Prefix reuse (design.md §4): the engine state after a media prefix, kept so that the next question
// about the same media prefills only its own suffix. Keyed by media content hash + ingest options +
// model; evicted least-recently-used under a byte budget. Engine-thread only except stats().
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "engine/api.h"

namespace avserve::service {

class PrefixCache {
 public:
  explicit PrefixCache(int64_t budget_bytes) : budget_bytes_(budget_bytes) {}

  static std::string Key(const std::string& model, const std::string& media_id, const std::string& ingest_key) {
    return model + "|" + media_id + "|" + ingest_key;
  }

  // A fork of the cached prefix (the cached copy stays pristine for the next question), or NOT_FOUND.
  absl::StatusOr<std::unique_ptr<engine::Sequence>> ForkCached(const std::string& key);
  // Keeps `prefix` (evicting LRU entries to fit). A prefix larger than the whole budget is not kept.
  void Insert(const std::string& key, std::unique_ptr<engine::Sequence> prefix);
  // Plain lookup for the token count of a cached prefix (-1 if absent); does not touch LRU order.
  int64_t CachedLength(const std::string& key) const;
  void Clear();

  int64_t bytes() const { return bytes_.load(); }
  int64_t entries() const { return entries_.load(); }
  int64_t hits() const { return hits_.load(); }
  int64_t misses() const { return misses_.load(); }

 private:
  struct Entry {
    std::string key;
    std::unique_ptr<engine::Sequence> sequence;
    int64_t bytes = 0;
  };
  void EvictUntilFits(int64_t incoming_bytes);

  const int64_t budget_bytes_;
  std::list<Entry> lru_;  // front = most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  std::atomic<int64_t> bytes_{0}, entries_{0}, hits_{0}, misses_{0};
};

}  // namespace avserve::service

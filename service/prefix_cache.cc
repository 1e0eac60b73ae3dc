#include "service/prefix_cache.h"

#include "absl/status/status.h"

namespace avserve::service {

absl::StatusOr<std::unique_ptr<engine::Sequence>> PrefixCache::ForkCached(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return absl::NotFoundError("prefix not cached");
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  auto fork = it->second->sequence->Fork();
  if (!fork.ok()) return fork.status();  // e.g. out of memory: caller prefills from scratch
  ++hits_;
  return fork;
}

int64_t PrefixCache::CachedLength(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? -1 : it->second->sequence->length();
}

void PrefixCache::Insert(const std::string& key, std::unique_ptr<engine::Sequence> prefix) {
  const int64_t size = static_cast<int64_t>(prefix->memory_bytes());
  if (size > budget_bytes_) return;
  if (auto it = index_.find(key); it != index_.end()) {
    bytes_ -= it->second->bytes;
    lru_.erase(it->second);
    index_.erase(it);
  }
  EvictUntilFits(size);
  lru_.push_front(Entry{key, std::move(prefix), size});
  index_[key] = lru_.begin();
  bytes_ += size;
  entries_ = static_cast<int64_t>(lru_.size());
}

void PrefixCache::EvictUntilFits(int64_t incoming_bytes) {
  while (!lru_.empty() && bytes_.load() + incoming_bytes > budget_bytes_) {
    bytes_ -= lru_.back().bytes;
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
  entries_ = static_cast<int64_t>(lru_.size());
}

void PrefixCache::Clear() {
  index_.clear();
  lru_.clear();
  bytes_ = 0;
  entries_ = 0;
}

}  // namespace avserve::service

// Prometheus metrics (text exposition format 0.0.4), kept in-process and rendered on scrape.
// Thread-safe: every method may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace avserve::service {

class Metrics {
 public:
  // Live values read at scrape time (queue depth, cache bytes, device memory).
  struct Gauges {
    int64_t queue_depth = 0;
    int64_t engine_busy = 0;
    int64_t prefix_cache_bytes = 0;
    int64_t prefix_cache_entries = 0;
    int64_t device_memory_bytes = 0;
    int64_t active_batch_jobs = 0;
  };
  using GaugeSource = std::function<Gauges()>;

  void set_gauge_source(GaugeSource source);
  // One finished RPC: its method (e.g. "Ask"), gRPC code name, and wall seconds.
  void RecordRequest(const std::string& method, const std::string& code, double seconds);
  void RecordPrefill(int64_t tokens, double seconds);
  void RecordDecode(int64_t tokens, double seconds);
  void RecordPrefixCache(bool hit);
  void RecordUploadBytes(int64_t bytes);

  std::string RenderPrometheus() const;

 private:
  // Cumulative buckets in seconds (le), plus +Inf.
  static constexpr std::array<double, 12> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
                                                      0.5,   1.0,  2.5,   5.0,  10.0, 30.0};
  struct Histogram {
    std::array<int64_t, kBuckets.size()> counts{};
    int64_t count = 0;
    double sum = 0;
    void Observe(double seconds);
    void Render(const std::string& name, const std::string& labels, std::string* out) const;
  };

  mutable std::mutex mu_;
  GaugeSource gauge_source_;
  std::map<std::pair<std::string, std::string>, int64_t> requests_;  // (method, code) -> count
  std::map<std::string, Histogram> request_latency_;                 // method -> seconds
  Histogram prefill_latency_, decode_latency_;
  int64_t prefill_tokens_ = 0, decode_tokens_ = 0;
  double last_decode_tokens_per_s_ = 0;
  int64_t cache_hits_ = 0, cache_misses_ = 0;
  int64_t upload_bytes_ = 0;
};

// Resident set size of this process, from /proc/self/statm (0 where unavailable).
int64_t ProcessResidentBytes();

}  // namespace avserve::service

#include "service/metrics.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace avserve::service {
namespace {

void Header(std::string* out, const char* name, const char* type, const char* help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

}  // namespace

int64_t ProcessResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long long size_pages = 0, resident_pages = 0;
  int n = std::fscanf(f, "%lld %lld", &size_pages, &resident_pages);
  std::fclose(f);
  if (n != 2) return 0;
  return static_cast<int64_t>(resident_pages) * sysconf(_SC_PAGESIZE);
}

void Metrics::Histogram::Observe(double seconds) {
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++counts[i];
  }
  ++count;
  sum += seconds;
}

void Metrics::Histogram::Render(const std::string& name, const std::string& labels, std::string* out) const {
  std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    absl::StrAppend(out, name, "_bucket{", labels, sep, "le=\"", absl::StrFormat("%g", kBuckets[i]), "\"} ",
                    counts[i], "\n");
  }
  absl::StrAppend(out, name, "_bucket{", labels, sep, "le=\"+Inf\"} ", count, "\n");
  std::string braces = labels.empty() ? "" : absl::StrCat("{", labels, "}");
  absl::StrAppend(out, name, "_sum", braces, " ", absl::StrFormat("%.6f", sum), "\n");
  absl::StrAppend(out, name, "_count", braces, " ", count, "\n");
}

void Metrics::set_gauge_source(GaugeSource source) {
  std::lock_guard<std::mutex> lock(mu_);
  gauge_source_ = std::move(source);
}

void Metrics::RecordRequest(const std::string& method, const std::string& code, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{method, code}];
  request_latency_[method].Observe(seconds);
}

void Metrics::RecordPrefill(int64_t tokens, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  prefill_tokens_ += tokens;
  prefill_latency_.Observe(seconds);
}

void Metrics::RecordDecode(int64_t tokens, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  decode_tokens_ += tokens;
  decode_latency_.Observe(seconds);
  if (seconds > 0) last_decode_tokens_per_s_ = static_cast<double>(tokens) / seconds;
}

void Metrics::RecordPrefixCache(bool hit) {
  std::lock_guard<std::mutex> lock(mu_);
  ++(hit ? cache_hits_ : cache_misses_);
}

void Metrics::RecordUploadBytes(int64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  upload_bytes_ += bytes;
}

std::string Metrics::RenderPrometheus() const {
  std::lock_guard<std::mutex> lock(mu_);
  Gauges g = gauge_source_ ? gauge_source_() : Gauges{};
  std::string out;
  Header(&out, "avserve_requests_total", "counter", "Finished RPCs by method and gRPC status code.");
  for (const auto& [key, n] : requests_) {
    absl::StrAppend(&out, "avserve_requests_total{method=\"", key.first, "\",code=\"", key.second, "\"} ", n, "\n");
  }
  Header(&out, "avserve_request_duration_seconds", "histogram", "RPC wall time by method.");
  for (const auto& [method, h] : request_latency_) {
    h.Render("avserve_request_duration_seconds", absl::StrCat("method=\"", method, "\""), &out);
  }
  Header(&out, "avserve_prefill_duration_seconds", "histogram", "Prefill time per request (media prefix + questions).");
  prefill_latency_.Render("avserve_prefill_duration_seconds", "", &out);
  Header(&out, "avserve_decode_duration_seconds", "histogram", "Decode time per request.");
  decode_latency_.Render("avserve_decode_duration_seconds", "", &out);
  Header(&out, "avserve_prefill_tokens_total", "counter", "Prompt tokens prefilled.");
  absl::StrAppend(&out, "avserve_prefill_tokens_total ", prefill_tokens_, "\n");
  Header(&out, "avserve_generated_tokens_total", "counter", "Tokens generated.");
  absl::StrAppend(&out, "avserve_generated_tokens_total ", decode_tokens_, "\n");
  Header(&out, "avserve_decode_tokens_per_second", "gauge", "Decode rate of the last request.");
  absl::StrAppend(&out, "avserve_decode_tokens_per_second ", absl::StrFormat("%.3f", last_decode_tokens_per_s_), "\n");
  Header(&out, "avserve_prefix_cache_hits_total", "counter", "Requests whose media prefix came from the cache.");
  absl::StrAppend(&out, "avserve_prefix_cache_hits_total ", cache_hits_, "\n");
  Header(&out, "avserve_prefix_cache_misses_total", "counter", "Requests that prefilled their media prefix.");
  absl::StrAppend(&out, "avserve_prefix_cache_misses_total ", cache_misses_, "\n");
  Header(&out, "avserve_upload_bytes_total", "counter", "Bytes received by Upload.");
  absl::StrAppend(&out, "avserve_upload_bytes_total ", upload_bytes_, "\n");
  const std::pair<const char*, int64_t> gauges[] = {
      {"avserve_queue_depth", g.queue_depth},
      {"avserve_engine_busy", g.engine_busy},
      {"avserve_prefix_cache_bytes", g.prefix_cache_bytes},
      {"avserve_prefix_cache_entries", g.prefix_cache_entries},
      {"avserve_device_memory_bytes", g.device_memory_bytes},
      {"avserve_active_batch_jobs", g.active_batch_jobs},
      {"avserve_process_resident_memory_bytes", ProcessResidentBytes()}};
  for (const auto& [name, value] : gauges) {
    Header(&out, name, "gauge", "Current value.");
    absl::StrAppend(&out, name, " ", value, "\n");
  }
  return out;
}

}  // namespace avserve::service

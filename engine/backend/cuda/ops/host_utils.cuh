// Host-side helpers shared by the kernels' launch code (included by .cu files only).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "engine/backend/cuda/check.h"

namespace avserve::engine::cuda {

// Streaming multiprocessors of the current device (read once).
inline int NumSms() {
  static const int sms = [] {
    int device = 0, count = 0;
    AVSERVE_CUDA_CHECK(cudaGetDevice(&device));
    AVSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
  }();
  return sms;
}

// A switch kept for measuring: whether environment variable `name` leaves its path on (unset, or anything that
// does not start with '0').
inline bool EnvSwitchOn(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr || v[0] != '0';
}

// A count kept for measuring: environment variable `name` as an integer of at least `least`, or `fallback` unset.
inline int EnvCount(const char* name, int fallback, int least) {
  const char* v = std::getenv(name);
  return v == nullptr ? fallback : std::max(least, std::atoi(v));
}

// Device scratch of type S kept per CUDA stream (kernels on one stream never overlap, so one copy serves all of a
// stream's launches): `make(stream)` builds it at the stream's first use. Kept for the process and never freed
// (the map too), so no destructor runs after the CUDA runtime has shut down. Each call site (each `make` type)
// has its own map.
template <typename S, typename Make>
S PerStreamScratch(cudaStream_t stream, Make make) {
  static std::mutex mu;
  static auto* all = new std::unordered_map<cudaStream_t, S>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = all->find(stream);
  if (it == all->end()) it = all->emplace(stream, make(stream)).first;
  return it->second;
}

}  // namespace avserve::engine::cuda

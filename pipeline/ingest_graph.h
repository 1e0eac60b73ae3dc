// The per-request streaming graph (design.md §3, style.md §6): ingest and the interleaver run on
// oneTBB workers while the caller's thread (the engine thread) consumes PromptChunks as they come,
// so prefill overlaps ingest.
//
//   input_node (segment source, e.g. MediaReader::Next)
//     -> function_node (serial, rejecting: back-pressure) Interleaver::Add
//     -> bounded queue of chunks -> on_chunk() on the calling thread
//
// Memory is bounded by one segment in each node plus `queue_chunks` chunks. The first error (from
// the source, the interleaver or on_chunk) stops the graph and is the one returned; cancellation
// (the flag becoming true) returns CANCELLED. The graph is always waited for before returning.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/api.h"
#include "engine/model/tokenizer.h"
#include "ingest/media_reader.h"
#include "ingest/media_types.h"
#include "pipeline/interleaver.h"

namespace avserve::pipeline {

struct IngestProgress {
  int64_t media_us_ingested = 0;  // end of the last segment interleaved
  int64_t media_us_total = 0;     // as given in GraphOptions (0 when unknown)
  int64_t tokens_delivered = 0;   // tokens handed to on_chunk so far, this chunk included
  int64_t tokens_total = 0;       // as given in GraphOptions (CountTokens), 0 when unknown
};

struct GraphOptions {
  StreamOptions stream;           // layout and chunk size (a frame block is never split)
  int queue_chunks = 4;           // chunks buffered between the interleaver and the consumer, >= 1
  int max_threads = 0;            // TBB workers of the graph's arena; 0 = oneTBB's default
  int64_t media_us_total = 0;     // for progress
  int64_t tokens_total = 0;       // for progress
};

// Pulls the next segment; std::nullopt at the end. Called from a TBB worker, one call at a time.
using SegmentSource = std::function<absl::StatusOr<std::optional<ingest::Segment>>()>;
// Receives each chunk in order on the thread that called RunIngestGraph. A non-OK status stops
// the graph and is returned.
using ChunkConsumer = std::function<absl::Status(engine::PromptChunk&& chunk, const IngestProgress& progress)>;

absl::Status RunIngestGraph(const SegmentSource& source, const engine::ModelInfo& info,
                            const engine::Tokenizer& tokenizer, const GraphOptions& options,
                            const ChunkConsumer& on_chunk, const std::atomic<bool>* cancel);

// The same over a MediaReader.
absl::Status RunIngestGraph(ingest::MediaReader& reader, const engine::ModelInfo& info,
                            const engine::Tokenizer& tokenizer, const GraphOptions& options,
                            const ChunkConsumer& on_chunk, const std::atomic<bool>* cancel);

}  // namespace avserve::pipeline

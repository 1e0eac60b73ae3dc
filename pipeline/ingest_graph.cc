#include "pipeline/ingest_graph.h"

#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "oneapi/tbb/concurrent_queue.h"
#include "oneapi/tbb/flow_graph.h"
#include "oneapi/tbb/task_arena.h"

namespace avserve::pipeline {
namespace {

using SegmentPtr = std::shared_ptr<const ingest::Segment>;

// What travels from the graph to the consumer. kError and kDone are always the last item.
struct Item {
  enum class Kind { kChunk, kError, kDone };
  Kind kind = Kind::kDone;
  engine::PromptChunk chunk;
  absl::Status status;
  int64_t media_us = 0;
};

// One request's graph: produced on a TBB worker, consumed on the caller's thread.
class GraphRun {
 public:
  GraphRun(const SegmentSource& source, const engine::ModelInfo& info, const engine::Tokenizer& tokenizer,
           const GraphOptions& options, const std::atomic<bool>* cancel)
      : source_(source), interleaver_(info, tokenizer, options.stream), options_(options), cancel_(cancel) {
    queue_.set_capacity(std::max(1, options.queue_chunks));
  }

  void Produce();
  absl::Status Consume(const ChunkConsumer& on_chunk);

 private:
  bool Stopped() const {
    return stop_.load(std::memory_order_relaxed) || (cancel_ != nullptr && cancel_->load()) || !FirstError().ok();
  }
  absl::Status FirstError() const {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }
  void SetError(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = std::move(status);
  }
  SegmentPtr NextSegment(tbb::flow_control& control);
  void Interleave(const SegmentPtr& segment);
  void PushChunks(std::vector<engine::PromptChunk>* ready, int64_t media_us);

  const SegmentSource& source_;
  Interleaver interleaver_;  // used by the serial interleave node, then by Produce after the graph
  GraphOptions options_;
  const std::atomic<bool>* cancel_;
  tbb::concurrent_bounded_queue<Item> queue_;
  std::atomic<bool> stop_{false};  // set by the consumer: stop producing, it is draining
  mutable std::mutex mu_;
  absl::Status error_;             // first producer-side error
};

SegmentPtr GraphRun::NextSegment(tbb::flow_control& control) {
  if (Stopped()) {
    control.stop();
    return nullptr;
  }
  absl::StatusOr<std::optional<ingest::Segment>> next;
  try {  // third-party code under the source must not unwind through oneTBB
    next = source_();
  } catch (const std::exception& e) {
    next = absl::InternalError(absl::StrCat("segment source threw: ", e.what()));
  } catch (...) {
    next = absl::InternalError("segment source threw");
  }
  if (!next.ok()) SetError(next.status());
  if (!next.ok() || !next->has_value()) {
    control.stop();
    return nullptr;
  }
  return std::make_shared<const ingest::Segment>(std::move(**next));
}

void GraphRun::Interleave(const SegmentPtr& segment) {
  if (segment == nullptr || Stopped()) return;
  std::vector<engine::PromptChunk> ready;
  absl::Status status = interleaver_.Add(*segment, &ready);
  if (!status.ok()) {
    SetError(std::move(status));
    return;
  }
  PushChunks(&ready, segment->end_us);
}

void GraphRun::PushChunks(std::vector<engine::PromptChunk>* ready, int64_t media_us) {
  for (engine::PromptChunk& chunk : *ready) {
    Item item;
    item.kind = Item::Kind::kChunk;
    item.chunk = std::move(chunk);
    item.media_us = media_us;
    queue_.push(std::move(item));  // blocks while the queue is full: back-pressure from the engine
  }
  ready->clear();
}

void GraphRun::Produce() {
  int64_t media_us = 0;
  {
    tbb::flow::graph graph;
    tbb::flow::input_node<SegmentPtr> input(graph, [this](tbb::flow_control& control) {
      return NextSegment(control);
    });
    // Serial and rejecting: the input node pulls the next segment only when this one is done.
    tbb::flow::function_node<SegmentPtr, tbb::flow::continue_msg, tbb::flow::rejecting> interleave(
        graph, tbb::flow::serial, [this, &media_us](const SegmentPtr& segment) {
          Interleave(segment);
          if (segment != nullptr) media_us = segment->end_us;
          return tbb::flow::continue_msg();
        });
    tbb::flow::make_edge(input, interleave);
    input.activate();
    graph.wait_for_all();
  }
  if (!Stopped()) {
    std::vector<engine::PromptChunk> ready;
    absl::Status status = interleaver_.Finish(&ready);
    if (status.ok()) {
      PushChunks(&ready, media_us);
    } else {
      SetError(std::move(status));
    }
  }
  Item last;
  last.status = FirstError();
  if (last.status.ok() && cancel_ != nullptr && cancel_->load()) {
    last.status = absl::CancelledError("request cancelled");
  }
  last.kind = last.status.ok() ? Item::Kind::kDone : Item::Kind::kError;
  queue_.push(std::move(last));
}

absl::Status GraphRun::Consume(const ChunkConsumer& on_chunk) {
  absl::Status result;
  IngestProgress progress;
  progress.media_us_total = options_.media_us_total;
  progress.tokens_total = options_.tokens_total;
  while (true) {
    Item item;
    queue_.pop(item);
    if (item.kind == Item::Kind::kDone) break;
    if (item.kind == Item::Kind::kError) {
      if (result.ok()) result = item.status;
      break;
    }
    if (!result.ok()) continue;  // draining after a consumer-side stop
    if (cancel_ != nullptr && cancel_->load()) {
      result = absl::CancelledError("request cancelled");
      stop_ = true;
      continue;
    }
    progress.media_us_ingested = item.media_us;
    progress.tokens_delivered += static_cast<int64_t>(item.chunk.size());
    absl::Status status = on_chunk(std::move(item.chunk), progress);
    if (!status.ok()) {
      result = std::move(status);
      stop_ = true;
    }
  }
  return result;
}

}  // namespace

absl::Status RunIngestGraph(const SegmentSource& source, const engine::ModelInfo& info,
                            const engine::Tokenizer& tokenizer, const GraphOptions& options,
                            const ChunkConsumer& on_chunk, const std::atomic<bool>* cancel) {
  GraphRun run(source, info, tokenizer, options, cancel);
  tbb::task_arena arena(options.max_threads > 0 ? options.max_threads : tbb::task_arena::automatic);
  // The graph is driven from its own thread: its wait_for_all() runs node bodies itself, so the
  // graph progresses even where oneTBB has no worker threads (one core), while this thread consumes.
  std::thread producer([&] { arena.execute([&] { run.Produce(); }); });
  absl::Status status = run.Consume(on_chunk);
  producer.join();  // the graph never outlives this call
  return status;
}

absl::Status RunIngestGraph(ingest::MediaReader& reader, const engine::ModelInfo& info,
                            const engine::Tokenizer& tokenizer, const GraphOptions& options,
                            const ChunkConsumer& on_chunk, const std::atomic<bool>* cancel) {
  const SegmentSource source = [&reader] { return reader.Next(); };
  return RunIngestGraph(source, info, tokenizer, options, on_chunk, cancel);
}

}  // namespace avserve::pipeline

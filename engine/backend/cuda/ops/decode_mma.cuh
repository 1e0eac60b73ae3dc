// Split-KV decode attention on tensor cores for up to 16 query rows per KV head, over one or several
// sequences in one launch: Note [Decode on tensor cores] in decode_mma.cu. Same visibility (no vision blocks)
// and rounding contract as attention.cuh.
#pragma once

#include "engine/backend/cuda/ops/attention.cuh"

namespace avserve::engine::cuda {

inline constexpr int kDecodeMmaMaxSeqs = 16;
inline constexpr int kDecodeMmaMaxRows = 16;  // query positions x GQA group, per KV head

// One sequence's cache and where its queries sit. Its query rows are rows [b * q_len, (b + 1) * q_len) of the
// shared q and o of AttentionParams (b = its index).
struct DecodeSeq {
  const __nv_bfloat16* k = nullptr;  // [kv_capacity, num_kv_heads, head_dim], strides of AttentionParams
  const __nv_bfloat16* v = nullptr;
  int q_pos0 = 0;
  int kv_begin = 0, kv_end = 0;
  int kv_capacity = 0;
  // Positions [kv_begin, shared_end) may instead be read from k_shared / v_shared: a cache with the same
  // capacity and strides that holds the same values there (forks of one snapshot share their prefix, so every
  // sequence of a batch reads one copy). shared_end <= kv_begin (the default) reads everything from k / v.
  const __nv_bfloat16* k_shared = nullptr;
  const __nv_bfloat16* v_shared = nullptr;
  int shared_end = 0;
};

struct DecodeSeqs {
  int count = 0;
  int q_len = 0;  // query positions per sequence
  // Forks read together (set by PlanDecodeMma; Note [Forks in one tile] in decode_mma.cu): with group_seqs > 1,
  // keys [group_lo, group_end) of every sequence are read from seq[0]'s cache by CTAs of group_seqs sequences
  // each, into key splits [0, group_splits); each sequence's keys from group_end on go to the splits after.
  int group_seqs = 1;
  int group_lo = 0, group_end = 0;
  int group_splits = 0;
  // A decode step's new rows (q_len 1), when the attention launch appends them itself: row b of k_new / v_new
  // ([count, num_kv_heads * head_dim] with these row strides) goes to slot q_pos0 % kv_capacity of sequence b's
  // cache, and is read from here in this launch. nullptr: the rows are in the caches already (LaunchAppendKv).
  const __nv_bfloat16* k_new = nullptr;
  const __nv_bfloat16* v_new = nullptr;
  int64_t k_new_stride = 0, v_new_stride = 0;
  DecodeSeq seq[kDecodeMmaMaxSeqs];
};

// Whether the kernel takes `p` (its q_len = all sequences' rows; k/v/positions come from DecodeSeqs):
// head_dim 256 or 512, no vision blocks, group x per-sequence queries <= 16, 16-byte aligned K/V rows.
bool DecodeMmaApplies(const AttentionParams& p, int q_len_per_seq);
// Key splits for `seqs` (every sequence gets the same number; later splits of a short one are empty).
int ChooseDecodeMmaSplits(const AttentionParams& p, const DecodeSeqs& seqs, int num_sms);
// The same, and whether forks that share seq[0]'s prefix (DecodeSeq::shared_end, every sequence past the
// first) read it together: fills the group fields of `seqs` and returns the splits of both parts.
int PlanDecodeMma(const AttentionParams& p, DecodeSeqs* seqs, int num_sms);
// p.q_len must be seqs.count * seqs.q_len; p.num_splits > 1 needs AttentionWorkspaceBytes(p) of workspace.
void LaunchDecodeMma(const AttentionParams& p, const DecodeSeqs& seqs, cudaStream_t stream);

// Appends each sequence's new K and V rows (rows [b * q_len, (b + 1) * q_len) of k_new / v_new, each a
// contiguous [num_kv_heads * head_dim] row) at ring slots (q_pos0 + i) % kv_capacity of its cache, whose slots
// are contiguous rows of row_elems. One launch for every sequence.
struct AppendKvParams {
  const __nv_bfloat16* k_new = nullptr;
  const __nv_bfloat16* v_new = nullptr;
  int64_t k_new_stride = 0, v_new_stride = 0;  // elements between tokens
  int64_t row_elems = 0;                       // num_kv_heads * head_dim, a multiple of 8
  int64_t k_slot_stride = 0, v_slot_stride = 0;
};
void LaunchAppendKv(const AppendKvParams& p, const DecodeSeqs& seqs, cudaStream_t stream);

}  // namespace avserve::engine::cuda

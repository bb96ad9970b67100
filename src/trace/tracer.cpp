#include "nanguard/trace/tracer.h"

#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>

#include "core/check.h"
#include "nanguard/trace/scope.h"

namespace nanguard::trace {
namespace detail {

struct TracerState {
  TracerOptions options;
  uint64_t generation = 0;
  std::atomic<bool> running{true};
  std::atomic<Phase> phase{Phase::forward};

  mutable std::mutex mutex;  // guards everything below
  std::vector<OpRecord> records;
  uint64_t epoch = 0;  // bumped by clear(), so in-flight ops do not write into new records
  int64_t dropped = 0;
  // (forward thread id, sequence number) -> module of the forward op that created the node.
  std::map<std::pair<uint64_t, int64_t>, std::string> node_modules;
  // "name.overload" -> which arguments the op only writes.
  std::unordered_map<std::string, std::vector<bool>> write_only;
};

}  // namespace detail

namespace {

using detail::TracerState;

// The engine wraps each autograd node in a FUNCTION record with this prefix; the node itself
// runs in a BACKWARD_FUNCTION record named after it ("SqrtBackward0") that carries the
// sequence number of the forward op. Shape checks and gradient sums that the engine runs
// after the node are inside the first but not the second.
constexpr const char* kEnginePrefix = "autograd::engine::evaluate_function: ";

// Ops whose outputs hold uninitialised memory: measuring them would find garbage NaNs.
const std::unordered_set<std::string>& uninitialised_producers() {
  static const std::unordered_set<std::string> names = {
      "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
      "aten::new_empty_strided", "aten::empty_permuted", "aten::resize_", "aten::resize_as_",
      "aten::_resize_output_", "aten::_empty_affine_quantized",
      "aten::_empty_per_channel_affine_quantized", "aten::empty_quantized"};
  return names;
}

// In-place ops that overwrite self without reading its values.
const std::unordered_set<std::string>& overwrite_self_ops() {
  static const std::unordered_set<std::string> names = {
      "aten::copy_", "aten::fill_", "aten::zero_", "aten::uniform_", "aten::normal_",
      "aten::random_", "aten::bernoulli_", "aten::exponential_", "aten::geometric_",
      "aten::cauchy_", "aten::log_normal_", "aten::set_", "aten::resize_", "aten::resize_as_",
      "aten::_resize_output_"};
  return names;
}

enum class FrameKind : uint8_t { op, engine, node };

struct Frame {
  FrameKind kind = FrameKind::op;
  int64_t record = -1;  // op frames: index of the record, -1 when not recorded
  std::string backward_node;
  std::string module;
};

// Open records on this thread. The generation tells frames of a previous tracer apart.
struct ThreadFrames {
  uint64_t generation = 0;
  std::vector<Frame> frames;
};

std::vector<Frame>& frames_for(uint64_t generation) {
  thread_local ThreadFrames tls;
  if (tls.generation != generation) {
    tls.frames.clear();
    tls.generation = generation;
  }
  return tls.frames;
}

struct Context : at::ObserverContext {
  std::shared_ptr<TracerState> state;
  FrameKind kind = FrameKind::op;
  size_t depth = 0;  // stack size with this frame pushed
  int64_t record = -1;
  uint64_t epoch = 0;
};

std::mutex g_active_mutex;
std::shared_ptr<TracerState> g_state;  // read with std::atomic_load from callbacks
OpTracer* g_tracer = nullptr;
uint64_t g_generation = 0;

template <typename Fn>
void for_each_tensor(const c10::IValue& value, Fn&& fn) {
  if (value.isTensor()) {
    fn(value.toTensor());
  } else if (value.isTensorList()) {
    for (const auto& t : value.toTensorList()) fn(static_cast<at::Tensor>(t));
  } else if (value.isList()) {
    for (const auto& element : value.toListRef()) {
      if (element.isTensor()) fn(element.toTensor());
    }
  } else if (value.isTuple()) {
    for (const auto& element : value.toTupleRef().elements()) for_each_tensor(element, fn);
  }
}

std::vector<bool> write_only_arguments(TracerState& state, const at::RecordFunction& fn,
                                       const char* name) {
  auto op = fn.operator_name();
  if (!op) return {};
  std::string key = op->name + "." + op->overload_name;
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    auto it = state.write_only.find(key);
    if (it != state.write_only.end()) return it->second;
  }
  std::vector<bool> flags;
  if (auto schema = fn.operator_schema()) {  // a copy of the schema: cached per operator
    const auto& args = schema->arguments();
    flags.resize(args.size(), false);
    for (size_t i = 0; i < args.size(); ++i) flags[i] = args[i].is_out();
    if (!flags.empty() && overwrite_self_ops().count(name)) flags[0] = true;
  }
  std::lock_guard<std::mutex> lock(state.mutex);
  state.write_only.emplace(key, flags);
  return flags;
}

// Health that records only dtype and shape (for uninitialised memory).
TensorHealth shape_only(const at::Tensor& t) {
  TensorHealth h;
  h.dtype = t.scalar_type();
  h.sizes = t.sizes().vec();
  h.numel = t.numel();
  return h;
}

TensorHealth safe_health(const at::Tensor& t) {
  try {
    return tensor_health(t);
  } catch (const std::exception&) {
    return shape_only(t);  // an exotic tensor must not break the traced step
  }
}

std::vector<int64_t> rows_where(const at::Tensor& bad_rows) {
  auto rows = bad_rows.nonzero().reshape(-1).to(torch::kCPU).to(torch::kLong).contiguous();
  return std::vector<int64_t>(rows.data_ptr<int64_t>(), rows.data_ptr<int64_t>() + rows.numel());
}

std::vector<int64_t> nonfinite_rows_of(const at::Tensor& t, int64_t batch_size) {
  return rows_where(t.detach().reshape({batch_size, -1}).isfinite().logical_not().any(1));
}

std::vector<int64_t> nan_rows_of(const at::Tensor& t, int64_t batch_size) {
  return rows_where(t.detach().reshape({batch_size, -1}).isnan().any(1));
}

std::unique_ptr<at::ObserverContext> start_op(const std::shared_ptr<TracerState>& state,
                                              const at::RecordFunction& fn) {
  auto& frames = frames_for(state->generation);
  const char* name = fn.name();
  auto ctx = std::make_unique<Context>();
  ctx->state = state;

  if (fn.scope() == at::RecordScope::BACKWARD_FUNCTION) {
    Frame frame;
    frame.kind = FrameKind::node;
    frame.backward_node = name;
    {
      std::lock_guard<std::mutex> lock(state->mutex);
      auto it = state->node_modules.find({fn.forwardThreadId(), fn.seqNr()});
      if (it != state->node_modules.end()) frame.module = it->second;
    }
    if (!frames.empty() && frames.back().kind == FrameKind::engine) {
      frames.back().module = frame.module;
    }
    frames.push_back(std::move(frame));
    ctx->kind = FrameKind::node;
    ctx->depth = frames.size();
    return ctx;
  }
  if (std::strncmp(name, kEnginePrefix, std::strlen(kEnginePrefix)) == 0) {
    Frame frame;
    frame.kind = FrameKind::engine;
    frame.backward_node = name + std::strlen(kEnginePrefix);
    frames.push_back(std::move(frame));
    ctx->kind = FrameKind::engine;
    ctx->depth = frames.size();
    return ctx;
  }

  OpRecord rec;
  rec.name = name;
  const Frame* node = nullptr;
  for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
    if (it->kind != FrameKind::op) {
      node = &*it;
      break;
    }
  }
  for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
    if (it->kind == FrameKind::op) {
      rec.parent = it->record;
      break;
    }
  }
  if (node) {
    rec.phase = Phase::backward;
    rec.backward_node = node->backward_node;
    rec.module = node->module;
  } else {
    rec.phase = state->phase.load();
    rec.module = Scope::current();
  }
  if (fn.seqNr() >= 0) {
    // The last op that starts with a given sequence number is the one that creates the node.
    std::lock_guard<std::mutex> lock(state->mutex);
    state->node_modules[{fn.threadId(), fn.seqNr()}] = rec.module;
  }

  bool full;
  {
    std::lock_guard<std::mutex> lock(state->mutex);
    full = static_cast<int64_t>(state->records.size()) >= state->options.max_records();
    if (full) ++state->dropped;
  }
  if (!full) {
    auto write_only = write_only_arguments(*state, fn, name);
    auto inputs = fn.inputs();
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (i < write_only.size() && write_only[i]) continue;
      if (inputs[i].isDouble() && !std::isfinite(inputs[i].toDouble())) rec.nonfinite_scalar_input = true;
      for_each_tensor(inputs[i], [&](const at::Tensor& t) {
        if (!t.defined()) return;
        rec.inputs.push_back(safe_health(t));
        rec.input_ids.push_back(tensor_id(t));
        if (state->options.keep_values()) rec.input_values.push_back(t.detach().clone());
      });
    }
    std::lock_guard<std::mutex> lock(state->mutex);
    if (static_cast<int64_t>(state->records.size()) < state->options.max_records()) {
      rec.index = static_cast<int64_t>(state->records.size());
      ctx->record = rec.index;
      ctx->epoch = state->epoch;
      state->records.push_back(std::move(rec));
    } else {
      ++state->dropped;
    }
  }
  Frame frame;
  frame.kind = FrameKind::op;
  frame.record = ctx->record;
  frames.push_back(std::move(frame));
  ctx->kind = FrameKind::op;
  ctx->depth = frames.size();
  return ctx;
}

void end_op(Context& ctx, const at::RecordFunction& fn) {
  auto& state = *ctx.state;
  auto& frames = frames_for(state.generation);
  if (ctx.depth >= 1 && frames.size() >= ctx.depth) frames.resize(ctx.depth - 1);
  if (ctx.kind != FrameKind::op || ctx.record < 0) return;

  const char* name = fn.name();
  bool uninitialised = uninitialised_producers().count(name) > 0;
  std::vector<TensorHealth> outputs;
  std::vector<uintptr_t> ids;
  std::vector<at::Tensor> values;
  std::vector<int64_t> rows, nan_rows;
  const int64_t batch = state.options.batch_size();
  bool rows_done = false;
  for (const auto& value : fn.outputs()) {
    for_each_tensor(value, [&](const at::Tensor& t) {
      if (!t.defined()) return;
      outputs.push_back(uninitialised ? shape_only(t) : safe_health(t));
      ids.push_back(tensor_id(t));
      if (state.options.keep_values()) values.push_back(t.detach().clone());
      if (batch > 0 && !rows_done && !outputs.back().finite()) {
        rows_done = true;  // only the first non-finite output
        if (t.dim() >= 1 && t.size(0) == batch) {
          try {
            rows = nonfinite_rows_of(t, batch);
            if (outputs.back().nan_count > 0) nan_rows = nan_rows_of(t, batch);
          } catch (const std::exception&) {
          }
        }
      }
    });
  }

  std::lock_guard<std::mutex> lock(state.mutex);
  if (ctx.epoch != state.epoch || ctx.record >= static_cast<int64_t>(state.records.size())) return;
  auto& rec = state.records[ctx.record];
  rec.outputs = std::move(outputs);
  rec.output_ids = std::move(ids);
  rec.output_values = std::move(values);
  rec.nonfinite_rows = std::move(rows);
  rec.nan_rows = std::move(nan_rows);
  rec.first_nonfinite_row = rec.nonfinite_rows.empty() ? -1 : rec.nonfinite_rows.front();
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  auto state = std::atomic_load(&g_state);
  if (!state || !state->running.load()) return nullptr;
  at::RecordFunctionGuard no_recording(false);  // our own health ops are not traced
  at::NoGradGuard no_grad;
  try {
    return start_op(state, fn);
  } catch (const std::exception&) {
    return nullptr;  // never break the traced step
  }
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  if (!ctx) return;
  at::RecordFunctionGuard no_recording(false);
  at::NoGradGuard no_grad;
  try {
    end_op(*static_cast<Context*>(ctx), fn);
  } catch (const std::exception&) {
  }
}

}  // namespace

const char* to_string(Phase phase) {
  switch (phase) {
    case Phase::forward: return "forward";
    case Phase::backward: return "backward";
    case Phase::optimizer: return "optimizer";
    case Phase::unknown: return "unknown";
  }
  return "unknown";
}

uintptr_t tensor_id(const torch::Tensor& tensor) {
  if (!tensor.defined() || !tensor.has_storage() || tensor.numel() == 0) return 0;
  const auto* base = static_cast<const char*>(tensor.storage().data_ptr().get());
  if (!base) return 0;
  return reinterpret_cast<uintptr_t>(base + tensor.storage_offset() * tensor.element_size());
}

bool OpRecord::inputs_finite() const {
  return !nonfinite_scalar_input &&
         std::all_of(inputs.begin(), inputs.end(), [](const auto& h) { return h.finite(); });
}

bool OpRecord::outputs_finite() const {
  return std::all_of(outputs.begin(), outputs.end(), [](const auto& h) { return h.finite(); });
}

std::string OpRecord::to_string() const {
  std::string s = fmt::format("#{} {} {}", index, trace::to_string(phase), name);
  if (!backward_node.empty()) s += fmt::format(" ({})", backward_node);
  if (!module.empty()) s += fmt::format(" [{}]", module);
  for (size_t i = 0; i < inputs.size(); ++i) s += fmt::format(" | in{}: {}", i, inputs[i].to_string());
  if (nonfinite_scalar_input) s += " | non-finite scalar argument";
  for (size_t i = 0; i < outputs.size(); ++i)
    s += fmt::format(" | out{}: {}", i, outputs[i].to_string());
  if (!nonfinite_rows.empty()) s += fmt::format(" | non-finite rows: {}", nonfinite_rows.size());
  return s;
}

OpTracer::OpTracer(TracerOptions options) {
  NANGUARD_CHECK(options.max_records() >= 0, "TracerOptions: max_records must be >= 0, got {}",
                 options.max_records());
  NANGUARD_CHECK(options.batch_size() >= 0, "TracerOptions: batch_size must be >= 0, got {}",
                 options.batch_size());
  std::lock_guard<std::mutex> lock(g_active_mutex);
  NANGUARD_CHECK(g_tracer == nullptr,
                 "OpTracer: another tracer is already running; stop it before starting one");
  state_ = std::make_shared<TracerState>();
  state_->options = options;
  state_->generation = ++g_generation;
  std::atomic_store(&g_state, state_);
  handle_ = at::addGlobalCallback(
      at::RecordFunctionCallback(on_start, on_end)
          .needsInputs(true)
          .needsOutputs(true)
          .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  g_tracer = this;
}

OpTracer::~OpTracer() { stop(); }

void OpTracer::stop() {
  std::lock_guard<std::mutex> lock(g_active_mutex);
  if (handle_ == 0) return;
  at::removeCallback(handle_);
  handle_ = 0;
  state_->running = false;
  std::atomic_store(&g_state, std::shared_ptr<TracerState>());
  if (g_tracer == this) g_tracer = nullptr;
}

bool OpTracer::running() const { return state_->running.load(); }

void OpTracer::set_phase(Phase phase) { state_->phase = phase; }

Phase OpTracer::phase() const { return state_->phase.load(); }

std::vector<OpRecord> OpTracer::records() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->records;
}

size_t OpTracer::size() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->records.size();
}

int64_t OpTracer::dropped() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->dropped;
}

void OpTracer::clear() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->records.clear();
  state_->dropped = 0;
  ++state_->epoch;
}

OpTracer* OpTracer::active() {
  std::lock_guard<std::mutex> lock(g_active_mutex);
  return g_tracer;
}

PhaseScope::PhaseScope(Phase phase) : state_(std::atomic_load(&g_state)) {
  if (state_) previous_ = state_->phase.exchange(phase);
}

PhaseScope::~PhaseScope() {
  if (state_) state_->phase = previous_;
}

}  // namespace nanguard::trace

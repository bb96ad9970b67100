#include "nanguard/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "nanguard/data/input_scale.h"
#include "nanguard/dist/data_parallel.h"
#include "nanguard/trace/scope.h"
#include "nanguard/train/incident_dump.h"

namespace nanguard {
namespace {
// The input scale of a rescaled run, saved with its weights.
constexpr const char* kInputScaleKey = "nanguard.input_scale";
}  // namespace

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The model's final activation applied to forward_logits' output.
at::Tensor activate(const at::Tensor& logits, const std::string& activation) {
  if (activation == "softmax") return torch::softmax(logits, -1);
  if (activation == "sigmoid") return torch::sigmoid(logits);
  return logits;
}

}  // namespace

Trainer::Trainer(SequentialModel model, CompileOptions options)
    : model_(std::move(model)), options_(std::move(options)) {
  if (options_.device.is_cuda()) {
    NANGUARD_CHECK(torch::cuda::is_available(), "device {} requested but CUDA is not available here",
                   options_.device.str());
    NANGUARD_CHECK(options_.device.index() < static_cast<int>(torch::cuda::device_count()),
                   "device {} requested but only {} CUDA device(s) are present", options_.device.str(),
                   torch::cuda::device_count());
  } else {
    NANGUARD_CHECK(options_.device.is_cpu(), "device {} is not supported (use cpu or cuda[:N])",
                   options_.device.str());
  }
  model_->to(options_.device);
  parameters_ = model_->parameters();
  // Every rank starts from rank 0's weights (and buffers): they stay equal from then on.
  if (options_.data_parallel) options_.data_parallel->broadcast_state(parameters_, model_->buffers());
  optimizer_ = make_optimizer(options_.optimizer, parameters_);
  schedule_ = make_schedule(options_.schedule, options_.optimizer.effective_learning_rate());
  set_learning_rate(*optimizer_, schedule_->learning_rate(0));
  // Resolve metric names now so a typo fails before training starts.
  (void)make_metrics();
  if (options_.guard.enabled()) {
    GuardHooks hooks;
    hooks.use_stable_loss = [this] {
      if (is_stable(options_.loss)) return false;
      options_.loss = stable_form(options_.loss);
      return true;
    };
    hooks.loss_is_stable = [this] { return is_stable(options_.loss); };
    hooks.quarantine = [this](const std::vector<int64_t>& ids) {
      if (loader_ != nullptr) loader_->exclude_ids(ids);
    };
    // Snapshots carry the step counter and the schedule, so a rollback keeps them in step.
    hooks.save_extra = [this] {
      std::vector<double> extra{static_cast<double>(global_step_)};
      auto state = schedule_->state();
      extra.insert(extra.end(), state.begin(), state.end());
      return extra;
    };
    hooks.load_extra = [this](const std::vector<double>& extra) {
      if (extra.empty()) return;
      global_step_ = static_cast<int64_t>(extra.front());
      schedule_->load_state(std::vector<double>(extra.begin() + 1, extra.end()));
    };
    // A rollback that re-runs the steps it lost advances the counter and the schedule with them.
    hooks.rerun_step_applied = [this] {
      ++global_step_;
      apply_scheduled_learning_rate();
    };
    // The spec's clipnorm / clipvalue run after the guard's check, before each update.
    hooks.clip_gradients = [this] { clip_gradients(options_.optimizer, parameters_); };
    // Inside fit the guard keeps only ids and gathers them from the training set; a loop of
    // the caller's own around train_step has its own data, whose tensors the guard keeps.
    hooks.gather_batch = [this](const at::Tensor& ids) {
      NANGUARD_INTERNAL_ASSERT(train_data_ != nullptr, "a batch remembered by id outside fit");
      return on_device(train_data_->gather_ids(ids));
    };
    hooks.can_gather_batch = [this] { return train_data_ != nullptr; };
    hooks.dump_incident = [this](int64_t step, const data::Batch& batch, const at::Tensor& rng) {
      if (incident_dump_dir_.empty()) return;
      write_incident_dump(incident_dump_dir_ / ("step_" + std::to_string(step)), *model_, batch, rng,
                          optimizer_.get(), saved_extras());
    };
    hooks.on_event = [this](const GuardEvent& e) {
      if (event_handler_) event_handler_(e);
    };
    hooks.audit_flagged_samples = [this] { return audit_flagged_; };
    hooks.rescale_inputs = [this] { return rescale_inputs(); };
    // Dense, conv and activation layers report their activations; recurrent layers apply
    // theirs inside LibTorch's kernels, which only op callbacks see.
    const auto& layers = model_->spec().layers;
    hooks.model_reports_activations = std::none_of(layers.begin(), layers.end(), [](const LayerSpec& l) {
      return l.type() == "lstm" || l.type() == "gru";
    });
    torch::nn::Module& module = *model_;
    guard_ = std::make_unique<Guard>(module, *optimizer_, options_.guard, std::move(hooks));
    if (options_.data_parallel) guard_->set_consensus(options_.data_parallel);
  }
}

Trainer::~Trainer() = default;

double Trainer::learning_rate() const { return get_learning_rate(*optimizer_); }

double Trainer::first_loss() const {
  return first_loss_.defined() ? first_loss_.sum().item<double>() : std::numeric_limits<double>::quiet_NaN();
}

std::vector<Metric> Trainer::make_metrics() const {
  std::vector<Metric> metrics;
  metrics.reserve(options_.metrics.size());
  for (const auto& name : options_.metrics) metrics.emplace_back(name, options_.loss);
  return metrics;
}

void Trainer::update_metrics(std::vector<Metric>& metrics, const at::Tensor& logits, const at::Tensor& target) {
  if (metrics.empty()) return;
  torch::NoGradGuard no_grad;
  auto outputs = activate(logits.detach(), model_->output_activation());
  for (auto& m : metrics) m.update(outputs, target);
}

void Trainer::zero_grad() {
  // Drop gradients instead of zeroing them: backward then hands its buffers over without a
  // copy. Same behaviour in LibTorch 1.13 and 2.x (whose zero_grad defaults differ).
  for (auto& p : parameters_) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

// The schedule's rate at the current step, times the guard's backoff.
void Trainer::apply_scheduled_learning_rate() {
  const double scale = guard_ ? guard_->lr_scale() : 1.0;
  set_learning_rate(*optimizer_, schedule_->learning_rate(global_step_) * scale);
}

data::Batch Trainer::on_device(const data::Batch& batch) const {
  if (options_.device.is_cpu() && (!batch.x.defined() || batch.x.is_cpu())) return batch;
  data::Batch moved = batch;
  const bool async = options_.device.is_cuda() && batch.x.defined() && batch.x.is_pinned();
  if (moved.x.defined()) moved.x = moved.x.to(options_.device, async);
  if (moved.y.defined()) moved.y = moved.y.to(options_.device, async);
  return moved;
}

StepResult Trainer::train_step(const data::Batch& batch) {
  model_->train();
  return step_on_batch(on_device(batch), nullptr);
}

at::Tensor Trainer::model_input(const at::Tensor& x) const { return input_scale_ == 1.0 ? x : x * input_scale_; }

// Once per run: inputs already rescaled are left alone (data/input_scale.h has the rule).
std::string Trainer::rescale_inputs() {
  if (input_scale_ != 1.0 || train_data_ == nullptr) return "";
  const data::UnitRangeDivisor d = data::unit_range_divisor(train_data_->x());
  if (d.divisor == 1.0) return "";
  input_scale_ = 1.0 / d.divisor;
  return fmt::format("inputs divided by {:.4g} ({}) before the model, for the rest of training and for evaluation",
                     d.divisor, d.describe());
}

at::Tensor Trainer::forward_backward_on(const data::Batch& batch, at::Tensor* logits_out) {
  at::Tensor logits = model_->forward_logits(model_input(batch.x));
  // Labels were range-checked once for the whole dataset (fit): no per-step host sync.
  LossSpec loss_spec = options_.loss;
  loss_spec.check_labels(false);
  at::Tensor loss;
  {
    NANGUARD_SCOPE("loss");  // so the tracer attributes the loss's ops
    loss = compute_loss(loss_spec, logits, model_->output_activation(), batch.y);
  }
  loss.backward();
  if (logits_out != nullptr) *logits_out = logits;
  return loss;
}

std::shared_ptr<const Incident> Trainer::examine(const data::Batch& batch) {
  NANGUARD_CHECK(guard_ != nullptr, "examine needs the guard (it is disabled in the options)");
  model_->train();
  return guard_->examine(on_device(batch), [this](const data::Batch& b) { return forward_backward_on(b, nullptr); });
}

void Trainer::set_incident_dump_dir(std::filesystem::path dir) { incident_dump_dir_ = std::move(dir); }

StepResult Trainer::step_on_batch(const data::Batch& batch, at::Tensor* logits_out) {
  apply_scheduled_learning_rate();
  at::Tensor logits;
  auto forward_backward = [&](const data::Batch& b) { return forward_backward_on(b, &logits); };
  if (!guard_) {
    zero_grad();
    auto loss = forward_backward(batch);
    if (options_.data_parallel) options_.data_parallel->average_gradients(parameters_);
    clip_gradients(options_.optimizer, parameters_);
    optimizer_->step();
    if (!first_loss_.defined()) first_loss_ = loss.detach();
    ++global_step_;
    if (logits_out != nullptr) *logits_out = logits.detach();
    return StepResult{loss.detach(), batch.size(), true, nullptr};
  }
  StepVerdict verdict = guard_->step(batch, forward_backward);
  StepResult result{torch::tensor(verdict.loss, torch::kDouble), batch.size(), verdict.applied(), verdict.incident};
  if (verdict.applied()) {
    if (!first_loss_.defined()) first_loss_ = result.loss;
    ++global_step_;
    // After an incident the batch may have lost quarantined rows: metrics use the logits only
    // when they cover the whole batch.
    if (logits_out != nullptr && logits.defined() && logits.size(0) == batch.size()) *logits_out = logits.detach();
  }
  if (verdict.stopped()) request_stop();
  return result;
}

void Trainer::check_labels(const data::TensorDataset& dataset, const char* what) const {
  if (options_.loss.type() != LossType::sparse_categorical_crossentropy || !dataset.y().defined() ||
      dataset.y().is_floating_point() || dataset.size() == 0) {
    return;
  }
  const int64_t classes = model_->output_shape().empty() ? 1 : model_->output_shape().back();
  auto [lo, hi] = torch::aminmax(dataset.y());
  const int64_t low = lo.item<int64_t>(), high = hi.item<int64_t>();
  if (low < 0 || high >= classes) {
    auto bad = torch::logical_or(dataset.y() < 0, dataset.y() >= classes).nonzero().flatten();
    const int64_t first = bad[0].item<int64_t>();
    throw ValueError(fmt::format("{} data: sample {} has label {}, outside [0, {}) for a model with {} outputs "
                                 "({} samples out of range)",
                                 what, dataset.ids()[first].item<int64_t>(), dataset.y()[first].item<int64_t>(),
                                 classes, classes, bad.numel()));
  }
}

Logs Trainer::run_epoch(data::BatchLoader& loader, int64_t epoch, const std::vector<Callback*>& callbacks) {
  loader.start_epoch(epoch);
  const int64_t num_batches = loader.num_batches();
  for (auto* cb : callbacks) cb->on_epoch_begin(*this, epoch, num_batches);
  auto metrics = make_metrics();
  // Running sums stay tensors: no host sync per step.
  at::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(options_.device));
  int64_t seen = 0;
  model_->train();
  for (int64_t b = 0; b < num_batches && !stop_requested_; ++b) {
    for (auto* cb : callbacks) cb->on_batch_begin(*this, b);
    data::Batch batch = on_device(loader.batch(b));
    at::Tensor logits;
    StepResult step = step_on_batch(batch, &logits);
    if (step.applied && logits.defined()) {
      update_metrics(metrics, logits, batch.y);
      torch::NoGradGuard no_grad;
      loss_sum.add_(step.loss.to(loss_sum.device(), torch::kDouble) * static_cast<double>(step.batch_size));
      seen += step.batch_size;
    }
    for (auto* cb : callbacks) cb->on_batch_end(*this, b, step);
  }
  double total = loss_sum.item<double>();
  reduce_over_ranks(total, seen, metrics);
  Logs logs;
  logs.set("loss", seen > 0 ? total / static_cast<double>(seen) : 0.0);
  for (const auto& m : metrics) logs.set(m.name(), m.result());
  return logs;
}

// The sums of every rank (one all-reduce): the epoch's or the evaluation's figures are the
// whole data's, the same on every rank.
void Trainer::reduce_over_ranks(double& loss_sum, int64_t& count, std::vector<Metric>& metrics) const {
  if (!options_.data_parallel) return;
  std::vector<double> sums{loss_sum, static_cast<double>(count)};
  for (const auto& m : metrics) {
    sums.push_back(m.total());
    sums.push_back(static_cast<double>(m.count()));
  }
  options_.data_parallel->all_sum(sums);
  loss_sum = sums[0];
  count = static_cast<int64_t>(sums[1]);
  for (size_t i = 0; i < metrics.size(); ++i)
    metrics[i].set_totals(sums[2 + 2 * i], static_cast<int64_t>(sums[3 + 2 * i]));
}

Logs Trainer::evaluate(const data::TensorDataset& dataset, int64_t batch_size) {
  NANGUARD_CHECK(batch_size > 0, "evaluate batch_size must be positive, got {}", batch_size);
  torch::NoGradGuard no_grad;
  const bool was_training = model_->is_training();
  model_->eval();
  auto metrics = make_metrics();
  data::BatchLoader loader(dataset, batch_size, /*shuffle=*/false);
  // Data parallelism: each rank evaluates every world-th batch, and the sums are reduced.
  const int rank = options_.data_parallel ? options_.data_parallel->rank() : 0;
  const int world = options_.data_parallel ? options_.data_parallel->world_size() : 1;
  double loss_sum = 0.0;
  int64_t seen = 0;
  for (int64_t b = rank; b < loader.num_batches(); b += world) {
    data::Batch batch = on_device(loader.batch(b));
    auto logits = model_->forward_logits(model_input(batch.x));
    auto loss = compute_loss(options_.loss, logits, model_->output_activation(), batch.y);
    loss_sum += loss.item<double>() * static_cast<double>(batch.size());
    seen += batch.size();
    update_metrics(metrics, logits, batch.y);
  }
  model_->train(was_training);
  reduce_over_ranks(loss_sum, seen, metrics);
  Logs logs;
  logs.set("loss", loss_sum / static_cast<double>(std::max<int64_t>(seen, 1)));
  for (const auto& m : metrics) logs.set(m.name(), m.result());
  return logs;
}

History Trainer::fit(const data::TensorDataset& train, const data::TensorDataset* validation,
                     const FitOptions& options, const std::vector<Callback*>& callbacks) {
  NANGUARD_CHECK(options.epochs > 0, "epochs must be positive, got {}", options.epochs);
  NANGUARD_CHECK(options.batch_size > 0, "batch_size must be positive, got {}", options.batch_size);
  check_labels(train, "training");
  if (validation != nullptr) check_labels(*validation, "validation");
  data::BatchLoader loader(train, options.batch_size, options.shuffle, options.seed);
  if (options_.data_parallel) loader.set_shard(options_.data_parallel->rank(), options_.data_parallel->world_size());
  if (guard_) loader.exclude_ids(guard_->quarantined());
  loader_ = &loader;
  train_data_ = &train;
  History history;
  stop_requested_ = false;
  for (auto* cb : callbacks) cb->on_train_begin(*this, options);
  for (int64_t epoch = 0; epoch < options.epochs && !stop_requested_; ++epoch) {
    const auto start = Clock::now();
    Logs logs = run_epoch(loader, epoch, callbacks);
    if (validation != nullptr && validation->size() > 0) {
      Logs val = evaluate(*validation);
      for (const auto& [name, value] : val.items()) logs.set("val_" + name, value);
    }
    logs.set("lr", learning_rate());
    logs.set("seconds", seconds_since(start));
    schedule_->on_epoch_end(epoch, logs.has("val_loss") ? logs.get("val_loss") : logs.get("loss"));
    history.append(epoch + 1, logs);
    for (auto* cb : callbacks) cb->on_epoch_end(*this, epoch, logs);
  }
  for (auto* cb : callbacks) cb->on_train_end(*this, history);
  loader_ = nullptr;
  train_data_ = nullptr;
  return history;
}

at::Tensor Trainer::predict(const at::Tensor& x, int64_t batch_size) {
  NANGUARD_CHECK(batch_size > 0, "predict batch_size must be positive, got {}", batch_size);
  torch::NoGradGuard no_grad;
  const bool was_training = model_->is_training();
  model_->eval();
  std::vector<at::Tensor> outputs;
  for (int64_t begin = 0; begin < x.size(0); begin += batch_size) {
    auto slice = x.slice(0, begin, std::min(begin + batch_size, x.size(0))).to(options_.device);
    outputs.push_back(model_->forward(model_input(slice)).to(x.device()));
  }
  model_->train(was_training);
  return outputs.empty() ? at::Tensor() : torch::cat(outputs);
}

void Trainer::save_weights(const std::filesystem::path& path) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model_->named_parameters()) {
    if (!torch::isfinite(item.value()).all().item<bool>()) {
      throw NonFiniteError("refusing to write " + path.string() + ": parameter '" + item.key() +
                           "' holds NaN or Inf");
    }
  }
  for (const auto& item : model_->named_buffers()) {
    if (item.value().is_floating_point() && !torch::isfinite(item.value()).all().item<bool>()) {
      throw NonFiniteError("refusing to write " + path.string() + ": buffer '" + item.key() +
                           "' holds NaN or Inf");
    }
  }
  write_module_tensors(path, *model_, saved_extras());
}

// A rescaled run's weights expect rescaled inputs: the scale travels with them.
ExtraTensors Trainer::saved_extras() const {
  if (input_scale_ == 1.0) return {};
  return {{kInputScaleKey, torch::tensor(input_scale_, torch::kDouble)}};
}

void Trainer::load_weights(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw IoError("weights file " + path.string() + " does not exist");
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path.string());
    // Read everything and check shapes before touching the model: Module::load would
    // silently resize a parameter to whatever the file holds.
    std::vector<std::pair<at::Tensor, at::Tensor>> loaded;
    auto collect = [&](const std::string& key, const at::Tensor& target, bool is_buffer) {
      at::Tensor value;
      if (!archive.try_read(key, value, is_buffer)) {
        throw ValueError("weights file " + path.string() + " has no tensor '" + key + "' (saved from another model?)");
      }
      if (value.sizes() != target.sizes()) {
        throw ValueError("weights file " + path.string() + ": '" + key + "' has shape " + c10::str(value.sizes()) +
                         ", the model expects " + c10::str(target.sizes()));
      }
      loaded.emplace_back(target, value);
    };
    for (const auto& item : model_->named_parameters()) collect(item.key(), item.value(), false);
    for (const auto& item : model_->named_buffers()) collect(item.key(), item.value(), true);
    // The input scale of a run the guard rescaled (absent: the inputs as the config gives them).
    double scale = 1.0;
    at::Tensor saved_scale;
    if (archive.try_read(kInputScaleKey, saved_scale, /*is_buffer=*/true)) {
      const bool ok = saved_scale.numel() == 1 && saved_scale.is_floating_point();
      scale = ok ? saved_scale.item<double>() : 0.0;
      if (!(std::isfinite(scale) && scale > 0)) {
        throw ValueError("weights file " + path.string() + ": '" + kInputScaleKey +
                         "' must be one finite number > 0, got " + (ok ? fmt::format("{}", scale) : "a tensor of shape " + c10::str(saved_scale.sizes())));
      }
    }
    torch::NoGradGuard no_grad;
    for (auto& [target, value] : loaded) target.copy_(value);
    input_scale_ = scale;
  } catch (const c10::Error& e) {
    throw ValueError("cannot load weights from " + path.string() +
                     " (not a nanguard weights file, or saved from another model): " +
                     e.what_without_backtrace());
  }
}

void Trainer::save_optimizer_state(const std::filesystem::path& path) {
  write_file_atomic(path, [&](const std::filesystem::path& tmp) { torch::save(*optimizer_, tmp.string()); });
}

void Trainer::load_optimizer_state(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw IoError("optimizer state " + path.string() + " does not exist");
  try {
    // Loaded onto the training device, beside the parameters the moments belong to.
    torch::serialize::InputArchive archive;
    archive.load_from(path.string(), options_.device);
    optimizer_->load(archive);
  } catch (const c10::Error& e) {
    throw ValueError("cannot load optimizer state from " + path.string() + " (not saved from a " +
                     to_string(options_.optimizer.type()) + " optimizer over this model's parameters): " +
                     e.what_without_backtrace());
  }
}

}  // namespace nanguard

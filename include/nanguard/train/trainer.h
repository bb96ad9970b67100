// The Keras-style trainer, built in layers on the public API:
//   train_step (one batch) -> run_epoch (one pass) -> fit (epochs, validation, callbacks).
// evaluate and predict run without gradients. Progress bars, early stopping and the guard's
// reporting are ordinary callbacks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "nanguard/data/dataset.h"
#include "nanguard/guard/guard.h"
#include "nanguard/train/history.h"
#include "nanguard/train/incident_dump.h"
#include "nanguard/train/loss.h"
#include "nanguard/train/metrics.h"
#include "nanguard/train/model.h"
#include "nanguard/train/optimizer.h"
#include "nanguard/train/schedule.h"

namespace nanguard {
namespace dist {
class DataParallel;
}

class Trainer;

// What compile() takes in Keras: loss, optimizer, metrics, plus an optional LR schedule.
struct CompileOptions {
  LossSpec loss;
  OptimizerSpec optimizer;
  std::vector<std::string> metrics{"accuracy"};
  ScheduleSpec schedule;  // type "constant" by default: the optimizer's learning rate
  // The guard watches every step (on by default; GuardOptions().enabled(false) turns it off).
  GuardOptions guard;
  // Where the model trains; batches are moved there as they are drawn (ids stay on the CPU).
  c10::Device device = c10::Device(c10::kCPU);
  // Data parallelism (null: one process). Every rank starts from rank 0's weights, takes its
  // own shard of each epoch (batch_size is per rank, as in PyTorch's DDP), averages the
  // gradients before each update, and evaluates its share of a dataset; the guard votes
  // through it. Every rank must run the same calls of the trainer.
  std::shared_ptr<dist::DataParallel> data_parallel;
};

struct FitOptions {
  int64_t epochs = 1;
  int64_t batch_size = 32;
  bool shuffle = true;
  uint64_t seed = 0;  // seeds the batch order; the caller seeds weight init with torch::manual_seed
};

// The outcome of one training step.
struct StepResult {
  at::Tensor loss;  // 0-dim, detached; read it lazily to avoid a sync per step on GPUs
  int64_t batch_size = 0;
  bool applied = true;  // false when the optimizer step was skipped
  std::shared_ptr<const Incident> incident;  // set when the guard caught a non-finite value
};

// Hooks called by fit(); override what you need.
class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin(Trainer&, const FitOptions&) {}
  virtual void on_train_end(Trainer&, const History&) {}
  virtual void on_epoch_begin(Trainer&, int64_t /*epoch*/, int64_t /*num_batches*/) {}
  virtual void on_epoch_end(Trainer&, int64_t /*epoch*/, const Logs&) {}
  virtual void on_batch_begin(Trainer&, int64_t /*batch*/) {}
  virtual void on_batch_end(Trainer&, int64_t /*batch*/, const StepResult&) {}
};

class Trainer {
 public:
  Trainer(SequentialModel model, CompileOptions options);
  ~Trainer();

  // Forward, loss, backward, gradient clipping and one optimizer step on one batch.
  StepResult train_step(const data::Batch& batch);
  // Mean loss and metrics over a dataset, without gradients ("loss", then metric names).
  Logs evaluate(const data::TensorDataset& dataset, int64_t batch_size = 256);
  // Prepares the loader's epoch and runs one pass over it (callbacks from on_epoch_begin to
  // on_batch_end); returns the epoch's mean loss and metrics.
  Logs run_epoch(data::BatchLoader& loader, int64_t epoch, const std::vector<Callback*>& callbacks = {});
  // Trains for options.epochs; validation may be null. Columns: loss, metrics, val_loss,
  // val_<metrics>, lr, seconds.
  History fit(const data::TensorDataset& train, const data::TensorDataset* validation,
              const FitOptions& options, const std::vector<Callback*>& callbacks = {});
  // Model outputs (after the final activation) for x, in batches, without gradients.
  at::Tensor predict(const at::Tensor& x, int64_t batch_size = 256);

  // Saves parameters and buffers atomically; refuses (NonFiniteError) if any is not finite,
  // so a poisoned checkpoint is never written.
  void save_weights(const std::filesystem::path& path);
  // The optimizer's state (moments, step counts), e.g. from an incident dump. Throws
  // ValueError naming the file when it does not fit this optimizer, IoError when unreadable.
  void save_optimizer_state(const std::filesystem::path& path);
  void load_optimizer_state(const std::filesystem::path& path);
  // Loads weights saved by save_weights; ValueError if they do not fit this model.
  void load_weights(const std::filesystem::path& path);

  // Writes each incident's pre-step state (weights, batch, RNG) to DIR/step_<N> for
  // `nanguard replay` ("" = off).
  void set_incident_dump_dir(std::filesystem::path dir);
  // Runs one step's forward and backward on the batch from the current weights and, if it goes
  // non-finite, replays and diagnoses it without updating anything (offline replay).
  std::shared_ptr<const Incident> examine(const data::Batch& batch);

  // Asks fit() to stop after the current batch.
  void request_stop() { stop_requested_ = true; }
  bool stop_requested() const { return stop_requested_; }

  SequentialModel& model() { return model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  LrSchedule& schedule() { return *schedule_; }
  const CompileOptions& options() const { return options_; }
  // Optimizer steps applied so far (Keras's optimizer.iterations); drives the schedule.
  int64_t global_step() const { return global_step_; }
  double learning_rate() const;
  // The guard (null when disabled in the options).
  Guard* guard() { return guard_.get(); }
  // Receives every guard event (incidents, actions, warnings) as it happens.
  void set_event_handler(std::function<void(const GuardEvent&)> handler) { event_handler_ = std::move(handler); }
  // Samples the data audit flagged before fit, with their properties (a plain id list converts);
  // incidents name them as such and blame every sample flagged for the same property.
  void set_audit_flagged_samples(AuditFlags flags) { audit_flagged_ = std::move(flags); }
  // The factor every input is multiplied by before the model (1 unless the guard's
  // rescale_inputs repair scaled inputs that were far from unit range); evaluate and predict
  // apply it too. save_weights stores it with the weights ("nanguard.input_scale") and
  // load_weights restores it, so `nanguard evaluate` of a rescaled run scales as training did.
  double input_scale() const { return input_scale_; }
  // The training loss of the first applied step (NaN before it): the level a run that learns
  // falls below.
  double first_loss() const;

 private:
  // Forward, loss, backward and the spec's clipping: the closure the guard runs.
  at::Tensor forward_backward_on(const data::Batch& batch, at::Tensor* logits_out);
  // The body of train_step; hands the batch's logits to the caller for the epoch's metrics.
  StepResult step_on_batch(const data::Batch& batch, at::Tensor* logits_out);
  std::vector<Metric> make_metrics() const;
  void update_metrics(std::vector<Metric>& metrics, const at::Tensor& logits, const at::Tensor& target);
  void reduce_over_ranks(double& loss_sum, int64_t& count, std::vector<Metric>& metrics) const;
  void zero_grad();
  void apply_scheduled_learning_rate();
  // The batch's inputs and labels on the training device.
  data::Batch on_device(const data::Batch& batch) const;
  // Inputs as the model takes them (times input_scale()).
  at::Tensor model_input(const at::Tensor& x) const;
  // The guard's rescale_inputs repair: scales the training inputs to unit range.
  std::string rescale_inputs();
  // What save_weights writes beside the model (the input scale of a rescaled run).
  ExtraTensors saved_extras() const;
  // Sparse labels must index the model's outputs; checked once per dataset, not per step.
  void check_labels(const data::TensorDataset& dataset, const char* what) const;

  SequentialModel model_;
  CompileOptions options_;
  std::vector<at::Tensor> parameters_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<LrSchedule> schedule_;
  std::unique_ptr<Guard> guard_;
  AuditFlags audit_flagged_;
  data::BatchLoader* loader_ = nullptr;  // the loader of the running fit, for quarantines
  const data::TensorDataset* train_data_ = nullptr;  // its data, to rebuild batches for replays
  std::function<void(const GuardEvent&)> event_handler_;
  std::filesystem::path incident_dump_dir_;
  int64_t global_step_ = 0;
  double input_scale_ = 1.0;
  at::Tensor first_loss_;  // kept as a tensor: no host sync per step
  bool stop_requested_ = false;
};

}  // namespace nanguard

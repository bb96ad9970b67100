// Everything the guard knows about an incident, as plain data: what failed, where the first
// non-finite value was born (from the replay), the batch, and the recent history of training
// signals. Diagnosis rules read only this struct, so they are testable without training.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "nanguard/monitor/warning.h"

namespace nanguard {

// One op of the replayed step, summarised.
struct OpSummary {
  std::string name;    // "aten::exp"
  std::string phase;   // "forward", "backward", "optimizer"
  std::string module;  // "layers.1.dense", "" when unscoped
  double absmax = 0;   // largest |x| over its finite outputs
};

// A sample of the batch that carries suspicious values.
struct SampleEvidence {
  int64_t id = -1;        // dataset index
  int64_t row = -1;       // row in the batch
  int64_t nonfinite = 0;  // NaN/Inf values among its features
  std::vector<int64_t> features;  // first few feature indices holding them
  double absmax = 0;      // largest finite |x|
  double zscore = 0;      // robust z-score of its input norm within the batch (median, MAD)
};

// Samples the data audit flagged before training, with the property each was flagged for, so
// that an incident can blame every sample of the same kind at once.
struct AuditFlags {
  AuditFlags() = default;
  // Ids without properties (what the audit hook gave before it kept them); sorted here.
  AuditFlags(std::vector<int64_t> flagged_ids);  // NOLINT: implicit, so old hooks still convert
  AuditFlags(std::initializer_list<int64_t> flagged_ids) : AuditFlags(std::vector<int64_t>(flagged_ids)) {}
  // Adds the ids flagged for a property (data::SampleFlag::kind: "non_finite", "missing", "blank",
  // "constant", "saturated", "out_of_range", "extreme", ...); they join `ids` too.
  void add(const std::string& property, std::vector<int64_t> flagged_ids);
  bool contains(int64_t id) const;
  // The ids flagged for a property, ascending; empty when none.
  const std::vector<int64_t>& with_property(const std::string& property) const;
  // The properties a sample was flagged for.
  std::vector<std::string> properties_of(int64_t id) const;

  std::vector<int64_t> ids;  // every flagged id, ascending and unique
  std::vector<std::pair<std::string, std::vector<int64_t>>> by_property;  // ids ascending
};

// A parameter whose scale no standard initialisation gives (measured on the incident's
// pre-step weights), and the initialisation that would replace it.
struct InitFinding {
  std::string parameter;  // "rnn.weight_hh", "lstm.bias_ih_l0"
  // "recurrent_gain": a recurrent matrix (or one gate's block of it) whose largest singular value
  //                   is above every standard initialisation's;
  // "weight_scale":   a weight whose standard deviation is several times He's sqrt(2 / fan_in);
  // "saturating_bias": a bias whose RMS alone drives sigmoid / tanh into their flat ends.
  std::string problem;
  double value = 0;      // the largest singular value, the standard deviation or the RMS
  double reference = 0;  // what a standard initialisation gives (1, He's std, ...)
  // The replacement: "orthogonal" (a recurrent matrix per gate block at gain 1, any other
  // matrix whole at `gain`), "glorot_uniform", "he_normal", "zeros", "uniform" in +-bound (a
  // recurrent layer's bias: PyTorch's default U(+-1/sqrt(hidden)) for its layers), or
  // "lstm_forget_one" (an LSTM's bias: zeros, its forget gate's 1 over bias_ih + bias_hh).
  std::string scheme;
  double bound = 0;
  double gain = 1;
  // The activation whose outputs this layer reads, which sets the replacement's gain ("relu",
  // "sigmoid", "tanh"; "" for the model's inputs or unknown), and the value those inputs start
  // at (0.5 after a sigmoid): a re-initialised weight then gets the bias -input_mean * W 1, so
  // its pre-activations start centred.
  std::string activation;
  double input_mean = 0;
};

// A new field must also join the list in src/guard/incident_wire.cpp: in a data-parallel run
// the evidence travels from the rank that found it to every other.
struct Evidence {
  int64_t step = 0;   // global step of the failed check
  int64_t epoch = -1;
  // Data parallelism: the rank whose check failed (and whose replay this evidence is), its host,
  // and every rank whose check failed at this step. -1, "" and empty in one process.
  int rank = -1;
  std::string host;
  std::vector<int> failed_ranks;
  // What failed the cheap check: "loss", "gradients", "parameters" (after the previous
  // optimizer step) or "optimizer_state"; "exception" when the closure threw.
  std::string failed_check;
  // The closure threw: its message, and the op that threw (it read non-finite values).
  std::string exception_message;
  std::string exception_op;
  // Names of the tensors that are non-finite (e.g. "layers.1.dense.weight.grad").
  std::vector<std::string> nonfinite_tensors;
  // The gradient norm was beyond float32's range for its square (above ~1.8e19) on this step
  // or the steps just before it, every gradient still finite: the guard applies such steps and
  // checks the parameters after each, so the incident usually follows an overflow streak.
  bool gradient_norm_overflow = false;

  // Replay.
  bool replayed = false;      // a replay was run
  bool reproduced = false;    // the replay hit non-finite values again
  int replays = 0;
  bool birth_found = false;
  std::string birth_op;       // "aten::log"
  // "forward", "backward", "optimizer"; "input" when no op was the birth because the values
  // were in the input batch before any op ran.
  std::string birth_phase;
  std::string birth_module;
  std::string birth_backward_node;  // "LogBackward0" when born inside backward
  std::string birth_reason;   // "input 0 of aten::log holds 37 exact zeros (log(0) = -inf)"
  // Input statistics of the birth op.
  int64_t birth_input_zeros = 0;
  int64_t birth_input_negatives = 0;
  double birth_input_absmax = 0;
  double birth_input_max = 0;
  double exp_overflow_threshold = 88.72;
  // NaN and Inf among the birth op's inputs (the zeros and negatives above count finite ones).
  int64_t birth_input_nan = 0;
  int64_t birth_input_posinf = 0;
  int64_t birth_input_neginf = 0;
  // The op that wrote Inf on purpose (from a fill value, e.g. masked_fill with -inf) which the
  // birth op turned into NaN; "" when the birth op's inputs were finite.
  std::string birth_inf_source;
  // The birth op is a division (addcdiv, div, reciprocal and their _foreach_ forms): the
  // exact zeros among its denominator's elements, and the ops that wrote the denominator,
  // oldest first ("aten::sqrt", "aten::div", "aten::add_": sqrt(v) / c + eps).
  bool birth_is_division = false;
  int64_t birth_denominator_zeros = 0;
  int64_t birth_denominator_numel = 0;
  std::vector<std::string> birth_denominator_ops;
  bool birth_denominator_sqrt_add = false;  // a sqrt followed by an add (where eps goes in)
  // The parameter whose update (or optimizer state) the birth op wrote, for a birth in the
  // optimizer step; "" when not known.
  std::string birth_parameter;
  // Every distinct op name the replayed step ran, sorted (what the model and loss are made
  // of: suggestions fit them, e.g. no softmax advice for a sigmoid output).
  std::vector<std::string> replay_ops;
  std::vector<OpSummary> preceding_ops;  // the ops just before the birth, oldest first
  std::vector<int64_t> blamed_rows;      // batch rows that first went non-finite
  std::vector<int64_t> blamed_samples;   // their dataset ids

  // The batch.
  int64_t batch_size = 0;
  // Whether the batch carried dataset ids (without them samples are named by row and cannot
  // be quarantined).
  bool batch_has_ids = true;
  std::vector<SampleEvidence> nonfinite_samples;  // samples with NaN/Inf inputs
  std::vector<SampleEvidence> outlier_samples;    // finite but extreme samples
  bool labels_out_of_range = false;
  // Dataset ids the data audit flagged before training (non-finite, extreme, blank, ...), and
  // the property each was flagged for.
  AuditFlags audit_flagged_samples;
  // Blamed samples the audit did not flag that are blank (every value 0) or constant in the
  // failing batch itself, as the guard found them (a loop with no data audit): "blank",
  // "constant".
  AuditFlags batch_flagged_samples;

  // Recent history, oldest first, one value per healthy step (up to the last ~100 steps).
  std::vector<double> loss_history;
  std::vector<double> grad_norm_history;
  double learning_rate = 0;
  // Per-layer gradient norms of the failing step (finite ones), as computed in the replay.
  std::vector<std::pair<std::string, double>> layer_grad_norms;
  // The optimizer: its name ("adam") and the smallest epsilon over its groups (NaN when it has
  // none, e.g. SGD, or when unknown); the dtype of the parameters ("float32").
  std::string optimizer_name;
  double optimizer_epsilon = std::numeric_limits<double>::quiet_NaN();
  std::string parameter_dtype;
  // Largest |w| over the parameters before the step.
  double weight_absmax = 0;
  bool params_nonfinite_before_step = false;
  bool optimizer_state_nonfinite = false;

  // What the trainer owns (what repairs are possible).
  bool loss_owned_by_trainer = false;
  bool loss_is_stable = true;
  bool clipping_enabled = false;
  // Warnings raised by the monitor before the incident (detector names).
  std::vector<std::string> prior_warnings;
  // The same warnings with their numbers (step, layer, value, forecast), oldest first.
  std::vector<monitor::Warning> monitor_warnings;
  // The environment self-test failed (hardware / broken library suspected).
  bool environment_suspect = false;
  // The failing self-test check, e.g. "matmul (random, 64x64 @ 64x64): max abs error 0.03, ...".
  std::string environment_finding;

  // Finite divergence: every value finite, but the run left its healthy regime (the guard's
  // divergence watch). failed_check is then "divergence".
  bool diverged = false;
  std::string divergence_kind;       // "loss_excursion", "overflow_forecast", "collapse", "dead_start",
                                     // "vanishing_start"
  std::string divergence_finding;    // the watch's sentence, with its numbers
  double divergence_value = 0;       // the loss, the forecast steps or the dead fraction
  double divergence_threshold = 0;   // the threshold it passed
  double divergence_reference = 0;   // the run's healthy loss level
  int64_t excursion_start = -1;      // the first step outside the healthy regime
  std::string divergence_layer;      // collapse, dead_start: the dead layer
  // The scale of the batch's (finite) inputs: raw 8-bit pixels have an RMS in the tens and
  // only integer values.
  double input_rms = 0;
  double input_absmax = 0;
  bool inputs_integer = false;
  // The trainer owns the data pipeline and can rescale the inputs (GuardHooks::rescale_inputs).
  bool inputs_rescalable = false;
  // The learning-rate backoffs this run already made for unscaled inputs, and the rate before
  // the first of them: a divergence after one says that a lower rate did not hold.
  int64_t unscaled_input_backoffs = 0;
  double rate_before_unscaled_backoffs = 0;

  // Parameters out of every standard initialisation's scale (recurrent gains above 1, weights
  // several times He's scale, saturating biases), as the guard measured them on this incident.
  std::vector<InitFinding> init_findings;
};

}  // namespace nanguard

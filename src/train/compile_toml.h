// Reading the compile section of a model config ([loss], [optimizer], [schedule], metrics)
// into specs. Every error is a ValueError naming the key, what was expected and found, and
// the file and line: "optimizer.learning_rate: expected a positive number, got string "x"
// (mnist.toml:14)".
#pragma once

#include <string>
#include <vector>

#include <toml++/toml.h>

#include "nanguard/train/loss.h"
#include "nanguard/train/optimizer.h"
#include "nanguard/train/schedule.h"

namespace nanguard {

// loss = "sparse_categorical_crossentropy", or a table with keys type, from_logits, fused,
// check_labels.
LossSpec loss_spec_from_toml(const toml::node& node, const std::string& source_name);

// optimizer = "adam", or a table with key type and the options that apply to it:
// learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm (all); momentum (sgd,
// rmsprop); nesterov (sgd); beta_1, beta_2, amsgrad (adam, adamw); epsilon (adam, adamw,
// rmsprop); rho (rmsprop).
OptimizerSpec optimizer_spec_from_toml(const toml::node& node, const std::string& source_name);

// schedule = "constant", or a table with key type and the options of that type (see
// ScheduleSpec); exponential_decay needs decay_steps and decay_rate, cosine_decay needs
// decay_steps, piecewise_constant needs boundaries and values.
ScheduleSpec schedule_spec_from_toml(const toml::node& node, const std::string& source_name);

// metrics = ["accuracy"] (a single string is accepted too); names are checked, duplicates
// refused.
std::vector<std::string> metrics_from_toml(const toml::node& node, const std::string& source_name);

}  // namespace nanguard

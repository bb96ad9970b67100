#include "guard/incident_wire.h"

#include <nlohmann/json.hpp>

#include "nanguard/core/error.h"

namespace nanguard {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(OpSummary, name, phase, module, absmax)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SampleEvidence, id, row, nonfinite, features, absmax, zscore)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AuditFlags, ids, by_property)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(InitFinding, parameter, problem, value, reference, scheme, bound, gain, activation,
                                   input_mean)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(CauseScore, cause, subkind, confidence, explanation, suggestion, samples)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Diagnosis, ranked)

namespace monitor {
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Warning, detector, step, layer, value, threshold, forecast_steps, cause, message,
                                   suggestion)
}  // namespace monitor

// Every field of Evidence (more than the 64 NLOHMANN_DEFINE_TYPE takes).
#define NANGUARD_EVIDENCE_FIELDS(X) \
  X(step) \
  X(epoch) \
  X(rank) \
  X(host) \
  X(failed_ranks) \
  X(failed_check) \
  X(exception_message) \
  X(exception_op) \
  X(nonfinite_tensors) \
  X(gradient_norm_overflow) \
  X(replayed) \
  X(reproduced) \
  X(replays) \
  X(birth_found) \
  X(birth_op) \
  X(birth_phase) \
  X(birth_module) \
  X(birth_backward_node) \
  X(birth_reason) \
  X(birth_input_zeros) \
  X(birth_input_negatives) \
  X(birth_input_absmax) \
  X(birth_input_max) \
  X(exp_overflow_threshold) \
  X(birth_input_nan) \
  X(birth_input_posinf) \
  X(birth_input_neginf) \
  X(birth_inf_source) \
  X(birth_is_division) \
  X(birth_denominator_zeros) \
  X(birth_denominator_numel) \
  X(birth_denominator_ops) \
  X(birth_denominator_sqrt_add) \
  X(birth_parameter) \
  X(replay_ops) \
  X(preceding_ops) \
  X(blamed_rows) \
  X(blamed_samples) \
  X(batch_size) \
  X(batch_has_ids) \
  X(nonfinite_samples) \
  X(outlier_samples) \
  X(labels_out_of_range) \
  X(audit_flagged_samples) \
  X(batch_flagged_samples) \
  X(loss_history) \
  X(grad_norm_history) \
  X(learning_rate) \
  X(layer_grad_norms) \
  X(optimizer_name) \
  X(optimizer_epsilon) \
  X(parameter_dtype) \
  X(weight_absmax) \
  X(params_nonfinite_before_step) \
  X(optimizer_state_nonfinite) \
  X(loss_owned_by_trainer) \
  X(loss_is_stable) \
  X(clipping_enabled) \
  X(prior_warnings) \
  X(monitor_warnings) \
  X(environment_suspect) \
  X(environment_finding) \
  X(diverged) \
  X(divergence_kind) \
  X(divergence_finding) \
  X(divergence_value) \
  X(divergence_threshold) \
  X(divergence_reference) \
  X(excursion_start) \
  X(divergence_layer) \
  X(input_rms) \
  X(input_absmax) \
  X(inputs_integer) \
  X(inputs_rescalable) \
  X(unscaled_input_backoffs) \
  X(rate_before_unscaled_backoffs) \
  X(init_findings) \

void to_json(nlohmann::json& j, const Evidence& e) {
#define X(field) j[#field] = e.field;
  NANGUARD_EVIDENCE_FIELDS(X)
#undef X
}

void from_json(const nlohmann::json& j, Evidence& e) {
#define X(field) j.at(#field).get_to(e.field);
  NANGUARD_EVIDENCE_FIELDS(X)
#undef X
}

namespace detail {

std::string encode_incident(const Incident& incident) {
  nlohmann::json j;
  j["step"] = incident.step;
  j["evidence"] = incident.evidence;
  j["diagnosis"] = incident.diagnosis;
  j["actions"] = incident.actions;
  j["outcome"] = incident.outcome;
  j["seconds_to_diagnosis"] = incident.seconds_to_diagnosis;
  const std::vector<std::uint8_t> bytes = nlohmann::json::to_cbor(j);
  return std::string(bytes.begin(), bytes.end());
}

std::shared_ptr<Incident> decode_incident(const std::string& bytes) {
  try {
    const nlohmann::json j = nlohmann::json::from_cbor(bytes);
    auto incident = std::make_shared<Incident>();
    j.at("step").get_to(incident->step);
    j.at("evidence").get_to(incident->evidence);
    j.at("diagnosis").get_to(incident->diagnosis);
    j.at("actions").get_to(incident->actions);
    j.at("outcome").get_to(incident->outcome);
    j.at("seconds_to_diagnosis").get_to(incident->seconds_to_diagnosis);
    if (incident->diagnosis.ranked.empty()) throw ValueError("an encoded incident without a diagnosis");
    return incident;
  } catch (const nlohmann::json::exception& e) {
    throw ValueError(std::string("not an encoded incident: ") + e.what());
  }
}

}  // namespace detail
}  // namespace nanguard

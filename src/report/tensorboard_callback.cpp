#include "nanguard/report/tensorboard_callback.h"

#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

namespace nanguard::report {

TensorBoardCallback::TensorBoardCallback(const std::filesystem::path& dir, TensorBoardOptions options)
    : writer_(dir), options_(options) {}

void TensorBoardCallback::on_batch_end(Trainer& trainer, int64_t /*batch*/, const StepResult& result) {
  const int64_t step = trainer.global_step();
  if (options_.loss_every() > 0 && step % options_.loss_every() == 0 && result.loss.defined()) {
    writer_.add_scalar("step/loss", result.loss.item<double>(), step);
  }
  if (options_.grad_norm_every() > 0 && step % options_.grad_norm_every() == 0) {
    // Per layer: the module path before the parameter's own name ("layers.1.dense.weight" ->
    // "layers.1.dense"). The squared sums stay on the device until one copy to the host.
    std::vector<std::string> layers;
    std::vector<at::Tensor> sums;
    for (const auto& item : trainer.model()->named_parameters(/*recurse=*/true)) {
      const at::Tensor& g = item.value().grad();
      if (!g.defined()) continue;
      const std::string& name = item.key();
      const auto dot = name.rfind('.');
      const std::string layer = dot == std::string::npos ? name : name.substr(0, dot);
      const at::Tensor sq = g.detach().to(torch::kDouble).pow(2).sum();
      if (!layers.empty() && layers.back() == layer) {
        sums.back() = sums.back() + sq;
      } else {
        layers.push_back(layer);
        sums.push_back(sq);
      }
    }
    if (!sums.empty()) {
      const at::Tensor host = torch::stack(sums).to(torch::kCPU).contiguous();
      const double* sq = host.data_ptr<double>();
      double total = 0;
      for (size_t i = 0; i < layers.size(); ++i) total += sq[i];
      writer_.add_scalar("grad_norm/total", std::sqrt(total), step);
      for (size_t i = 0; i < layers.size(); ++i) writer_.add_scalar("grad_norm/" + layers[i], std::sqrt(sq[i]), step);
    }
  }
}

void TensorBoardCallback::on_epoch_end(Trainer& /*trainer*/, int64_t epoch, const Logs& logs) {
  // The trainer counts epochs from 0; History and the report from 1.
  for (const auto& [name, value] : logs.items()) writer_.add_scalar("epoch/" + name, value, epoch + 1);
  writer_.flush();
}

void TensorBoardCallback::on_train_end(Trainer& /*trainer*/, const History& /*history*/) { writer_.flush(); }

std::string event_markdown(const GuardEvent& e) {
  if (e.kind == "incident") {
    std::string samples;
    for (size_t i = 0; i < e.samples.size() && i < 20; ++i) samples += (i ? ", " : "") + std::to_string(e.samples[i]);
    if (e.samples.size() > 20) samples += fmt::format(" and {} more", e.samples.size() - 20);
    return fmt::format(
        "**Incident at step {}**: {} ({:.0f}% confidence)\n\n{}\n\n- failed check: {}\n- birth op: {}\n- phase: {}\n"
        "- module: {}\n- samples: {}",
        e.step, e.cause, std::isfinite(e.confidence) ? e.confidence * 100 : 0.0, e.explanation,
        e.detail.empty() ? "-" : e.detail, e.op.empty() ? "-" : e.op, e.phase.empty() ? "-" : e.phase,
        e.module.empty() ? "-" : e.module, samples.empty() ? "-" : samples);
  }
  if (e.kind == "action") return fmt::format("**Repair at step {}**: {} - {}", e.step, e.action, e.detail);
  return fmt::format("**Warning at step {}**: {} - {}", e.step, e.cause, e.explanation.empty() ? e.detail : e.explanation);
}

void TensorBoardCallback::add_event(const GuardEvent& event) {
  const std::string kind = event.kind == "incident" || event.kind == "action" ? event.kind : "warning";
  writer_.add_text("guard/" + kind, event_markdown(event), event.step);
}

}  // namespace nanguard::report

// A bad initialisation measured on the parameters (init_inspection.h), its repair, and the dead
// start as an incident of the guard.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "clusters.h"
#include "guard/init_inspection.h"
#include "nanguard/core/error.h"
#include "nanguard/guard/guard.h"
#include "nanguard/guard/optimizer_adapter.h"
#include "nanguard/guard/snapshot.h"
#include "nanguard/train/trainer.h"

namespace nanguard {
namespace {

using detail::inspect_initialisation;

struct Named {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
};
Named named(torch::nn::Module& m) {
  Named n;
  for (const auto& p : m.named_parameters()) {
    n.names.push_back(p.key());
    n.params.push_back(p.value());
  }
  return n;
}

double largest_singular_value(const at::Tensor& m) { return at::linalg_svdvals(m.detach()).max().item<double>(); }

TEST(InitInspection, DefaultInitialisationsAreInScale) {
  torch::manual_seed(0);
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(28, 32));
  torch::nn::RNN rnn(torch::nn::RNNOptions(28, 96));
  torch::nn::Linear dense(784, 128);
  torch::nn::Embedding embedding(1000, 16);  // N(0, 1) is its standard
  for (torch::nn::Module* m : {static_cast<torch::nn::Module*>(lstm.get()), static_cast<torch::nn::Module*>(rnn.get()),
                               static_cast<torch::nn::Module*>(dense.get()),
                               static_cast<torch::nn::Module*>(embedding.get())}) {
    const Named n = named(*m);
    EXPECT_TRUE(inspect_initialisation(n.names, n.params).empty()) << m->name();
  }
}

TEST(InitInspection, ARecurrentGainAboveOneIsFoundPerGateBlock) {
  torch::manual_seed(0);
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(8, 16));
  {
    torch::NoGradGuard no_grad;
    // Only the cell gate's block (the third of four) has gain 1.5.
    torch::nn::init::orthogonal_(lstm->named_parameters()["weight_hh_l0"].narrow(0, 32, 16), 1.5);
  }
  const Named n = named(*lstm);
  const auto found = inspect_initialisation(n.names, n.params);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].parameter, "weight_hh_l0");
  EXPECT_EQ(found[0].problem, "recurrent_gain");
  EXPECT_NEAR(found[0].value, 1.5, 1e-4);
  EXPECT_EQ(found[0].scheme, "orthogonal");
}

TEST(InitInspection, OutOfScaleWeightsAndSaturatingBiasesAreFound) {
  torch::manual_seed(0);
  torch::nn::Linear a(64, 64), b(64, 10);
  {
    torch::NoGradGuard no_grad;
    a->weight.normal_(0.0, 1.0);  // 5.7x He's sqrt(2 / 64)
    a->bias.fill_(15.0);
  }
  torch::nn::Sequential model(a, b);
  const Named n = named(*model);
  auto found = inspect_initialisation(n.names, n.params);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].parameter, "0.weight");
  EXPECT_EQ(found[0].problem, "weight_scale");
  EXPECT_NEAR(found[0].reference, std::sqrt(2.0 / 64), 1e-12);
  EXPECT_EQ(found[0].scheme, "glorot_uniform");
  EXPECT_EQ(found[1].parameter, "0.bias");
  EXPECT_EQ(found[1].problem, "saturating_bias");
  EXPECT_EQ(found[1].scheme, "zeros");
  EXPECT_EQ(found[1].bound, 0.0);
  // A prefix keeps one layer; recurrent_only skips everything that is not recurrent.
  EXPECT_TRUE(inspect_initialisation(n.names, n.params, "1.").empty());
  EXPECT_EQ(inspect_initialisation(n.names, n.params, "0.").size(), 2u);
  EXPECT_TRUE(inspect_initialisation(n.names, n.params, "", /*recurrent_only=*/true).empty());
}

TEST(InitInspection, ARecurrentLayersSaturatingBiasGetsTheLayersDefaultRange) {
  torch::nn::GRU gru(torch::nn::GRUOptions(28, 32));
  {
    torch::NoGradGuard no_grad;
    gru->named_parameters()["bias_hh_l0"].fill_(15.0);
  }
  const Named n = named(*gru);
  const auto found = inspect_initialisation(n.names, n.params);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].parameter, "bias_hh_l0");
  EXPECT_EQ(found[0].scheme, "uniform");
  EXPECT_DOUBLE_EQ(found[0].bound, 1.0 / std::sqrt(32.0));
  at::Tensor b = gru->named_parameters()["bias_hh_l0"];
  EXPECT_NE(detail::reinitialize(b, found[0]).find("uniform in +-0.177"), std::string::npos);
  EXPECT_LE(b.abs().max().item<double>(), found[0].bound);
  InitFinding no_bound = found[0];
  no_bound.bound = 0;
  EXPECT_THROW(detail::reinitialize(b, no_bound), ValueError);
}

TEST(InitInspection, AnLstmsSaturatingBiasesGetZerosWithTheForgetGateOpen) {
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(28, 32));
  {
    torch::NoGradGuard no_grad;
    lstm->named_parameters()["bias_ih_l0"].fill_(15.0);
    lstm->named_parameters()["bias_hh_l0"].fill_(15.0);
  }
  const Named n = named(*lstm);
  const auto found = inspect_initialisation(n.names, n.params);
  ASSERT_EQ(found.size(), 2u);
  for (const InitFinding& f : found) {
    EXPECT_EQ(f.scheme, "lstm_forget_one") << f.parameter;
    EXPECT_NE(detail::reinitialize(lstm->named_parameters()[f.parameter], f).find("forget gate"), std::string::npos);
  }
  // torch::nn::LSTM's gate order is input, forget, cell, output; the two biases add up.
  const at::Tensor sum = lstm->named_parameters()["bias_ih_l0"] + lstm->named_parameters()["bias_hh_l0"];
  EXPECT_TRUE(torch::equal(sum.narrow(0, 32, 32), torch::ones({32})));
  EXPECT_EQ(sum.narrow(0, 0, 32).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(sum.narrow(0, 64, 64).abs().max().item<float>(), 0.0f);
  InitFinding odd = found[0];
  at::Tensor three_gates = torch::zeros({30});
  EXPECT_THROW(detail::reinitialize(three_gates, odd), ValueError);
}

TEST(InitInspection, NonFiniteParametersAreNotMistakenForABadInitialisation) {
  torch::nn::RNN rnn(torch::nn::RNNOptions(4, 8));
  {
    torch::NoGradGuard no_grad;
    torch::nn::init::orthogonal_(rnn->named_parameters()["weight_hh_l0"], 2.0);
    rnn->named_parameters()["weight_hh_l0"][0][0] = std::nanf("");
  }
  const Named n = named(*rnn);
  EXPECT_TRUE(inspect_initialisation(n.names, n.params).empty());
}

TEST(Reinitialize, EachSchemeReplacesTheValuesInPlace) {
  torch::manual_seed(0);
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(8, 16));
  torch::nn::Linear dense(64, 32);
  at::Tensor w_hh = lstm->named_parameters()["weight_hh_l0"];
  {
    torch::NoGradGuard no_grad;
    w_hh.mul_(3.0);
    dense->weight.normal_(0.0, 1.0);
    dense->bias.fill_(9.0);
  }
  const void* storage = w_hh.data_ptr();
  InitFinding f;
  f.parameter = "weight_hh_l0";
  f.problem = "recurrent_gain";
  f.value = 3.4;
  f.scheme = "orthogonal";
  EXPECT_NE(detail::reinitialize(w_hh, f).find("orthogonal, gain 1"), std::string::npos);
  EXPECT_EQ(w_hh.data_ptr(), storage);
  for (int64_t g = 0; g < 4; ++g) EXPECT_NEAR(largest_singular_value(w_hh.narrow(0, 16 * g, 16)), 1.0, 1e-4);

  f.parameter = "weight";
  f.scheme = "glorot_uniform";
  detail::reinitialize(dense->weight, f);
  const double bound = std::sqrt(6.0 / (64 + 32));
  EXPECT_LE(dense->weight.abs().max().item<double>(), bound + 1e-6);
  EXPECT_GT(dense->weight.abs().max().item<double>(), 0.5 * bound);

  f.parameter = "bias";
  f.scheme = "zeros";
  detail::reinitialize(dense->bias, f);
  EXPECT_EQ(dense->bias.abs().max().item<double>(), 0.0);

  f.scheme = "lecun_cubic";
  try {
    detail::reinitialize(dense->bias, f);
    FAIL() << "an unknown scheme must throw";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("lecun_cubic"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("expected orthogonal, glorot_uniform, he_normal, uniform, lstm_forget_one or zeros"),
              std::string::npos);
  }
}

// Four dense layers out of scale: the replacement follows the activation each one reads, and the
// layer reading a sigmoid layer's output starts centred.
TEST(InitInspection, TheReplacementFitsTheActivationBeforeEachLayer) {
  torch::manual_seed(0);
  // Fan-ins of 32 or more: N(0, 1) is then over 3x He's scale.
  torch::nn::Sequential model(torch::nn::Linear(64, 32), torch::nn::Linear(32, 32), torch::nn::Linear(32, 32),
                              torch::nn::Linear(32, 4));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters())
      if (p.key().find("weight") != std::string::npos) p.value().normal_(0.0, 1.0);
  }
  const Named n = named(*model);
  const detail::ActivationKinds kinds{{"0", "sigmoid"}, {"1", "relu"}, {"2", "tanh"}};
  const auto found = inspect_initialisation(n.names, n.params, "", false, kinds);
  ASSERT_EQ(found.size(), 4u);
  // The first weight reads the data: no activation before it, gain 1 before its sigmoid.
  EXPECT_EQ(found[0].scheme, "orthogonal");
  EXPECT_DOUBLE_EQ(found[0].gain, 1.0);
  EXPECT_EQ(found[0].activation, "");
  EXPECT_EQ(found[0].input_mean, 0.0);
  // It reads the sigmoid layer: gain 4, centred, whatever follows it (a relu).
  EXPECT_EQ(found[1].scheme, "orthogonal");
  EXPECT_DOUBLE_EQ(found[1].gain, 4.0);
  EXPECT_EQ(found[1].activation, "sigmoid");
  EXPECT_EQ(found[1].input_mean, 0.5);
  EXPECT_EQ(found[2].scheme, "he_normal");  // reads the relu layer
  EXPECT_EQ(found[2].activation, "relu");
  EXPECT_EQ(found[2].input_mean, 0.0);
  EXPECT_EQ(found[3].scheme, "orthogonal");  // the output layer reads the tanh layer
  EXPECT_DOUBLE_EQ(found[3].gain, 1.0);
  EXPECT_EQ(found[3].activation, "tanh");
  // A first weight before a relu gets He normal (He's convention for the first layer); one
  // reading a layer whose activation was not seen gets Glorot uniform.
  const auto relu_first = inspect_initialisation(n.names, n.params, "", false, {{"0", "relu"}});
  ASSERT_EQ(relu_first.size(), 4u);
  EXPECT_EQ(relu_first[0].scheme, "he_normal");
  EXPECT_EQ(relu_first[1].scheme, "he_normal");  // reads the relu layer
  EXPECT_EQ(relu_first[2].scheme, "glorot_uniform");
  EXPECT_EQ(relu_first[2].activation, "");
  // Without the kinds every weight gets Glorot uniform, and nothing is centred.
  for (const auto& f : inspect_initialisation(n.names, n.params)) {
    EXPECT_EQ(f.scheme, "glorot_uniform") << f.parameter;
    EXPECT_EQ(f.input_mean, 0.0) << f.parameter;
  }
  // A chain that breaks (the layer before produces other features than this one reads) centres
  // nothing.
  torch::nn::Linear a(16, 32), b(24, 8);
  {
    torch::NoGradGuard no_grad;
    b->weight.normal_(0.0, 1.0);
  }
  const auto broken = inspect_initialisation({"a.weight", "a.bias", "b.weight", "b.bias"},
                                             {a->weight, a->bias, b->weight, b->bias}, "", false, {{"a", "sigmoid"}});
  ASSERT_EQ(broken.size(), 1u);
  EXPECT_EQ(broken[0].parameter, "b.weight");
  EXPECT_EQ(broken[0].input_mean, 0.0);
}

// Activations in scopes of their own (torch.nn.Sequential(Linear, Sigmoid, Linear, ReLU, Linear):
// scopes "1" and "3") belong to the weighted layers before them, in order.
TEST(InitInspection, ActivationsInTheirOwnScopeBelongToTheLayersBeforeThem) {
  torch::nn::Sequential model(torch::nn::Linear(8, 8), torch::nn::Functional(torch::sigmoid), torch::nn::Linear(8, 8),
                              torch::nn::Functional(torch::relu), torch::nn::Linear(8, 2));
  const Named n = named(*model);
  detail::ActivationKinds kinds;
  std::map<std::string, std::string> owners;
  detail::learn_activation_kinds(kinds, n.names, n.params, {{"1", "sigmoid"}, {"3", "relu"}}, &owners);
  EXPECT_EQ(kinds, (detail::ActivationKinds{{"0", "sigmoid"}, {"2", "relu"}}));
  EXPECT_EQ(owners, (std::map<std::string, std::string>{{"1", "0"}, {"3", "2"}}));
  // Scopes that are the layers' own are taken as they are.
  detail::ActivationKinds own;
  detail::learn_activation_kinds(own, n.names, n.params, {{"2", "tanh"}});
  EXPECT_EQ(own, (detail::ActivationKinds{{"2", "tanh"}}));
  // As many activations as cannot be matched one to one (a recurrence repeats them): none.
  detail::ActivationKinds repeated;
  detail::learn_activation_kinds(repeated, n.names, n.params,
                                 {{"", "sigmoid"}, {"", "sigmoid"}, {"", "tanh"}, {"", "sigmoid"}, {"", "tanh"}});
  EXPECT_TRUE(repeated.empty());
  // An LSTM's input weight feeds sigmoid and tanh gates: it keeps Glorot whatever ran there.
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(64, 16));
  {
    torch::NoGradGuard no_grad;
    lstm->named_parameters()["weight_ih_l0"].normal_(0.0, 1.0);
  }
  const Named l = named(*lstm);
  const auto found = inspect_initialisation(l.names, l.params, "", false, {{"", "sigmoid"}});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].parameter, "weight_ih_l0");
  EXPECT_EQ(found[0].scheme, "glorot_uniform");
}

TEST(Reinitialize, AnOrthogonalWeightAtAGainCentresItsBiasOnTheInputsMean) {
  torch::manual_seed(0);
  torch::nn::Linear dense(32, 16);
  InitFinding f;
  f.parameter = "dense.weight";
  f.problem = "weight_scale";
  f.value = 1.0;
  f.scheme = "orthogonal";
  f.gain = 4.0;
  f.activation = "sigmoid";
  f.input_mean = 0.5;
  const std::string done = detail::reinitialize(dense->weight, f, dense->bias);
  EXPECT_NE(done.find("orthogonal, gain 4 after its sigmoid inputs"), std::string::npos) << done;
  EXPECT_NE(done.find("bias centred for inputs starting at 0.5"), std::string::npos) << done;
  const auto sv = at::linalg_svdvals(dense->weight.detach());
  EXPECT_NEAR(sv.max().item<double>(), 4.0, 1e-4);
  EXPECT_NEAR(sv.min().item<double>(), 4.0, 1e-4);
  // Inputs all at 0.5 give pre-activations of 0.
  const auto pre = dense->forward(torch::full({1, 32}, 0.5));
  EXPECT_LT(pre.abs().max().item<double>(), 1e-5);
  // He normal: std sqrt(2 / fan_in).
  torch::nn::Linear wide(2000, 400);
  f.scheme = "he_normal";
  f.input_mean = 0;
  detail::reinitialize(wide->weight, f);
  EXPECT_NEAR(wide->weight.std().item<double>(), std::sqrt(2.0 / 2000), 2e-3 * std::sqrt(2.0 / 2000) * 10);
  f.scheme = "orthogonal";
  f.gain = 0;
  EXPECT_THROW(detail::reinitialize(dense->weight, f), ValueError);
  EXPECT_EQ(detail::sibling_bias("layers.3.dense.weight"), "layers.3.dense.bias");
  EXPECT_EQ(detail::sibling_bias("rnn.weight_hh_l0"), "");
}

TEST(SnapshotRetake, ARetakenSnapshotHoldsTheChangedStateAndTheKeptFirstToo) {
  torch::nn::Linear net(3, 2);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  auto adapter = make_optimizer_adapter(opt);
  SnapshotRing ring({net->parameters(), {}, {adapter.get()}, nullptr, nullptr}, 2, /*keep_first=*/true);
  ring.take(0);
  {
    torch::NoGradGuard no_grad;
    net->weight.fill_(7.0);
  }
  ring.retake(0);
  {
    torch::NoGradGuard no_grad;
    net->weight.fill_(-1.0);
  }
  ring.take(5);
  ring.discard_after(0);  // only the ring's and the kept snapshot of step 0 are left
  ASSERT_EQ(ring.restore_at_or_before(0, /*include_first=*/false), 0);
  EXPECT_EQ(net->weight.min().item<double>(), 7.0);
  {
    torch::NoGradGuard no_grad;
    net->weight.fill_(-1.0);
  }
  ring.take(9);
  ring.take(12);  // the ring (capacity 2) no longer holds step 0: only the kept first one does
  ASSERT_EQ(ring.restore_at_or_before(0, /*include_first=*/true), 0);
  EXPECT_EQ(net->weight.min().item<double>(), 7.0);
}

// An LSTM whose gate biases (15 + 15) pin every gate: its gradient is exactly 0 from step 0.
struct Reader : torch::nn::Module {
  Reader() {
    lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(4, 8).batch_first(true)));
    out = register_module("out", torch::nn::Linear(8, 3));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = std::get<0>(lstm->forward(x));
    return out->forward(h.select(1, h.size(1) - 1));
  }
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Linear out{nullptr};
};

TEST(GuardDeadStart, ASaturatedLstmIsReinitialisedFromTheInitialState) {
  torch::manual_seed(3);
  auto model = std::make_shared<Reader>();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->lstm->named_parameters())
      if (p.key().rfind("bias", 0) == 0) p.value().fill_(15.0);
  }
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-2));
  std::vector<GuardEvent> events;
  GuardHooks hooks;
  hooks.on_event = [&](const GuardEvent& e) { events.push_back(e); };
  Guard guard(*model, opt, GuardOptions(), hooks);
  const auto x = torch::randn({64, 5, 4});
  const auto y = torch::randint(0, 3, {64});
  for (int64_t step = 0; step < 12; ++step) {
    data::Batch b{x.narrow(0, (step % 4) * 16, 16), y.narrow(0, (step % 4) * 16, 16),
                  torch::arange((step % 4) * 16, (step % 4) * 16 + 16, torch::kLong)};
    guard.step(b, [&](const data::Batch& batch) {
      auto loss = torch::nn::functional::cross_entropy(model->forward(batch.x), batch.y);
      loss.backward();
      return loss;
    });
  }
  ASSERT_EQ(guard.incidents().size(), 1u);
  const Incident& inc = *guard.incidents().front();
  EXPECT_EQ(inc.diagnosis.top().cause, cause::bad_initialization);
  EXPECT_EQ(inc.diagnosis.top().subkind, "dead_start");
  EXPECT_EQ(inc.evidence.divergence_layer, "lstm");
  EXPECT_EQ(inc.evidence.init_findings.size(), 2u);  // bias_ih_l0, bias_hh_l0
  ASSERT_GE(inc.actions.size(), 2u);
  EXPECT_EQ(inc.actions[0], "rollback");
  EXPECT_EQ(inc.actions[1], "reinitialize");
  bool rolled_to_start = false;
  for (const auto& e : events)
    if (e.kind == "action" && e.action == "rollback") rolled_to_start = e.detail.find("step 0") != std::string::npos;
  EXPECT_TRUE(rolled_to_start);
  // The biases left the saturated range and the LSTM learns now.
  for (auto& p : model->lstm->named_parameters())
    if (p.key().rfind("bias", 0) == 0) EXPECT_LT(p.value().abs().max().item<double>(), 1.0) << p.key();
  ASSERT_TRUE(model->lstm->named_parameters()["weight_ih_l0"].grad().defined() || true);
  opt.zero_grad();
  torch::nn::functional::cross_entropy(model->forward(x), y).backward();
  EXPECT_GT(model->lstm->named_parameters()["weight_ih_l0"].grad().abs().max().item<double>(), 0.0);
}

TEST(GuardDeadStart, ALayerWithoutGradientButInScaleStaysAWarning) {
  // relu units all dead from a large negative bias of the output layer's input: the first
  // layer gets no gradient, but nothing is out of scale (bias -3 is below the limit).
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(6, 8), torch::nn::Functional(torch::relu), torch::nn::Linear(8, 3));
  {
    torch::NoGradGuard no_grad;
    model->named_parameters()["0.weight"].mul_(0.01);
    model->named_parameters()["0.bias"].fill_(-3.0);
  }
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*model, opt);
  const auto x = torch::rand({16, 6});
  const auto y = torch::randint(0, 3, {16});
  for (int step = 0; step < 5; ++step) {
    guard.step(data::Batch{x, y, torch::arange(16, torch::kLong)}, [&](const data::Batch& b) {
      auto loss = torch::nn::functional::cross_entropy(model->forward(b.x), b.y);
      loss.backward();
      return loss;
    });
  }
  EXPECT_TRUE(guard.incidents().empty());
}

// A deep sigmoid MLP with N(0, 1) weights: the gradient fades over its depth from step 0. The
// guard restarts it from the initial state with each weight re-initialised for the sigmoid it reads.
struct DeepSigmoidRun {
  size_t incidents = 0;
  std::string cause, actions, reinit_detail;
  double accuracy = 0;
};

// 12 dense sigmoid layers of 32 and a softmax output, SGD 0.1.
ModelSpec deep_sigmoid_spec() {
  ModelSpec spec;
  spec.input_shape = {guard_test::kFeatures};
  for (int i = 0; i < 12; ++i) spec.add(layers::dense(32, "sigmoid"));
  spec.add(layers::dense(guard_test::kClasses, "softmax"));
  return spec;
}
CompileOptions sgd_compile(bool guarded) {
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  c.optimizer = OptimizerSpec().type(OptimizerType::sgd).learning_rate(0.1);
  c.guard.enabled(guarded);
  return c;
}

DeepSigmoidRun deep_sigmoid(bool guarded) {
  using namespace guard_test;
  torch::manual_seed(0);
  SequentialModel model(deep_sigmoid_spec());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters())
      if (p.key().find("weight") != std::string::npos) p.value().normal_(0.0, 1.0);
  }
  Trainer trainer(model, sgd_compile(guarded));
  DeepSigmoidRun out;
  if (guarded) {
    trainer.set_event_handler([&](const GuardEvent& e) {
      if (e.kind == "action" && e.action == "reinitialize") out.reinit_detail = e.detail;
    });
  }
  FitOptions f;
  f.epochs = 3;
  f.batch_size = 32;
  f.seed = 1;
  trainer.fit(clusters(1024, 1), nullptr, f);
  out.accuracy = trainer.evaluate(clusters(512, 2)).get("accuracy");
  if (guarded && trainer.guard() != nullptr) {
    const auto& incidents = trainer.guard()->incidents();
    out.incidents = incidents.size();
    if (!incidents.empty()) {
      const auto& top = incidents.front()->diagnosis.top();
      out.cause = top.cause + "/" + top.subkind;
      for (const auto& a : incidents.front()->actions) out.actions += (out.actions.empty() ? "" : ",") + a;
    }
  }
  return out;
}

TEST(GuardVanishingStart, ADeepSigmoidNetIsReinitialisedToFitItsActivations) {
  const DeepSigmoidRun plain = deep_sigmoid(false);
  const DeepSigmoidRun guarded = deep_sigmoid(true);
  ASSERT_EQ(guarded.incidents, 1u);
  EXPECT_EQ(guarded.cause, "bad_initialization/vanishing_start");
  EXPECT_EQ(guarded.actions.rfind("rollback,reinitialize", 0), 0u) << guarded.actions;
  EXPECT_NE(guarded.reinit_detail.find("orthogonal, gain 4 after its sigmoid inputs"), std::string::npos)
      << guarded.reinit_detail;
  EXPECT_NE(guarded.reinit_detail.find("bias centred"), std::string::npos) << guarded.reinit_detail;
  std::cout << "deep sigmoid accuracy: unguarded " << plain.accuracy << ", guarded " << guarded.accuracy << "\n";
  EXPECT_GT(guarded.accuracy, plain.accuracy + 0.2);
}

// The same depth with a standard initialisation is left alone, whatever its gradients do.
TEST(GuardVanishingStart, AStandardInitialisationIsNeverAnIncident) {
  using namespace guard_test;
  torch::manual_seed(0);
  Trainer trainer(SequentialModel(deep_sigmoid_spec()), sgd_compile(true));
  FitOptions f;
  f.epochs = 1;
  f.batch_size = 32;
  trainer.fit(clusters(512, 1), nullptr, f);
  EXPECT_TRUE(trainer.guard()->incidents().empty());
}

}  // namespace
}  // namespace nanguard

// The built-in scenarios Z0-Z15 of the NaN zoo (see docs/zoo.md). Each trigger was tuned on
// this data (6000 MNIST training images, seeds 0-2) so that the unguarded run really goes
// non-finite; the comment of each scenario says why its numbers were chosen.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <mutex>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/error.h"
#include "nanguard/train/model.h"
#include "nanguard/zoo/scenario.h"

namespace nanguard::zoo {
namespace {

constexpr int64_t kTrain = 6000;  // training images per run: an epoch is 94 steps of 64
constexpr int64_t kTest = 2000;

// MNIST as loaded from a folder, kept for the process (a table builds ~150 runs from it).
const data::MnistSplits& mnist(const std::filesystem::path& dir) {
  static std::mutex mutex;
  static std::map<std::string, data::MnistSplits> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = dir.string();
  auto it = loaded.find(key);
  if (it != loaded.end()) return it->second;
  if (!std::filesystem::exists(dir / "train-images-idx3-ubyte") &&
      !std::filesystem::exists(dir / "train-images-idx3-ubyte.gz")) {
    throw IoError(fmt::format("zoo: MNIST not found in '{}' (expected train-images-idx3-ubyte; "
                              "scripts/setup.sh --data downloads it, or pass --mnist DIR)",
                              key));
  }
  return loaded.emplace(key, data::load_mnist(dir, 1.0)).first->second;
}

// The first n training and test images, as float pixels divided by `divisor`, and the run's
// size defaults.
ScenarioRun mnist_run(const BuildContext& ctx, double divisor = 255.0) {
  const auto& m = mnist(ctx.mnist_dir);
  const int64_t n_train = ctx.train_samples > 0 ? ctx.train_samples : kTrain;
  const int64_t n_test = ctx.test_samples > 0 ? ctx.test_samples : kTest;
  auto train = m.train.head(n_train);
  auto test = m.test.head(n_test);
  ScenarioRun run;
  run.train = data::TensorDataset(train.x() / divisor, train.y(), train.ids());
  run.test = data::TensorDataset(test.x() / divisor, test.y(), test.ids());
  run.epochs = ctx.epochs > 0 ? ctx.epochs : 3;
  run.batch_size = 64;
  return run;
}

// A Keras-style MLP on 28x28 images: flatten, hidden layers, a linear output of 10 scores.
SequentialModel mlp(const std::vector<int64_t>& hidden, const std::string& activation,
                    const std::string& init = "glorot_uniform") {
  ModelSpec spec;
  spec.input_shape = {28, 28};
  spec.add(layers::flatten());
  for (int64_t units : hidden) spec.add(layers::dense(units, activation).kernel_initializer(init));
  spec.add(layers::dense(10, "linear").kernel_initializer(init));
  return SequentialModel(spec);
}

void set_model(ScenarioRun& run, SequentialModel model) {
  run.model = model.ptr();
  run.forward = [model](const at::Tensor& x) mutable { return model->forward(x); };
}

at::Tensor cross_entropy(const at::Tensor& scores, const at::Tensor& y) {
  return torch::nn::functional::cross_entropy(scores, y);
}

std::shared_ptr<torch::optim::Optimizer> adam(torch::nn::Module& model, double lr = 1e-3) {
  return std::make_shared<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(lr));
}
std::shared_ptr<torch::optim::Optimizer> sgd(torch::nn::Module& model, double lr) {
  return std::make_shared<torch::optim::SGD>(model.parameters(), torch::optim::SGDOptions(lr));
}

// The healthy reference: MLP 784-128-10 (relu), Adam 1e-3, stable cross-entropy.
ScenarioRun healthy(const BuildContext& ctx) {
  ScenarioRun run = mnist_run(ctx);
  set_model(run, mlp({128}, "relu"));
  run.loss = cross_entropy;
  run.optimizer = adam(*run.model);
  return run;
}

Scenario z0() {
  Scenario s;
  s.id = "Z0";
  s.title = "healthy MLP";
  s.trigger = "MLP 784-128-10 (relu) on 6000 MNIST images, Adam 1e-3, 3 epochs: nothing goes wrong";
  s.true_cause = "none";
  s.produces_nonfinite = false;
  s.build = healthy;
  return s;
}

Scenario z1() {
  Scenario s;
  s.id = "Z1";
  s.title = "learning rate too high";
  // Raw 0-255 pixels make the first layer's gradients 255x larger. With relu and lr 0.5-5 the
  // units die within a few steps and the run flat-lines at ~10% without ever going non-finite;
  // leaky_relu (alpha 0.3) cannot die, so the weights grow geometrically instead: with SGD
  // lr 0.01 the loss goes non-finite at step 23-24 (seeds 0-2), lr 0.005 at step 47-55, and
  // lr 0.001 (the clean twin) trains to ~80% in an epoch. One lr backoff (x0.1) is the repair.
  s.trigger = "MLP (leaky_relu) on raw 0-255 pixels, SGD lr 0.01 (clean twin: lr 0.001)";
  s.true_cause = "lr_too_high";
  // The raw pixels are why lr 0.01 is too high here (the clean twin changes the rate, not the
  // scale): naming the unscaled inputs is also right.
  s.also_correct = {"unscaled_inputs"};
  // Where the first non-finite value is born, measured unguarded: the logits grow as the product
  // of both layers' weights, so the loss outgrows float32 long before any weight does. At step 23
  // (seed 0) every log-probability is finite (|x| up to 2.7e38, the largest weight 2.4e17) and
  // nll_loss's mean reduction overflows to Inf; seeds 1 and 2 likewise at step 25 (|x| up to
  // 1.0e38 and 2.4e37). zoo.md expected the weights to overflow first, in the optimizer.
  s.expected_birth_op = "aten::nll_loss_forward";
  s.expected_phase = "forward";
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = mnist_run(ctx, 1.0);
    set_model(run, mlp({128}, "leaky_relu"));
    run.loss = cross_entropy;
    run.optimizer = sgd(*run.model, ctx.inject_fault ? 0.01 : 0.001);
    return run;
  };
  return s;
}

// An Elman RNN with a periodic activation, h_t = sin(W_ih x_t + W_hh h_{t-1} + b), reading
// the 28 image rows, beside a small MLP on the whole image; the class scores are the sum of
// both read-outs. Parameter names follow torch::nn::RNN ("rnn.weight_hh").
struct SineCellImpl : torch::nn::Module {
  SineCellImpl(int64_t inputs, int64_t hidden, double recurrent_gain) {
    weight_ih = register_parameter("weight_ih", torch::randn({hidden, inputs}) / std::sqrt(double(inputs)));
    weight_hh = register_parameter("weight_hh", torch::empty({hidden, hidden}));
    bias = register_parameter("bias", torch::zeros({hidden}));
    torch::NoGradGuard no_grad;
    torch::nn::init::orthogonal_(weight_hh, recurrent_gain);
  }
  at::Tensor weight_ih, weight_hh, bias;
};
TORCH_MODULE(SineCell);

struct RowReaderImpl : torch::nn::Module {
  RowReaderImpl(int64_t hidden, double recurrent_gain) {
    rnn = register_module("rnn", SineCell(28, hidden, recurrent_gain));
    out = register_module("out", torch::nn::Linear(hidden, 10));
    mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(784, 128), torch::nn::ReLU(),
                                                       torch::nn::Linear(128, 10)));
  }
  at::Tensor forward(const at::Tensor& images) {
    auto x = images.reshape({images.size(0), 28, 28});
    auto h = torch::zeros({x.size(0), rnn->weight_hh.size(0)}, x.options());
    const auto input = torch::matmul(x, rnn->weight_ih.t()) + rnn->bias;  // [N, 28, hidden]
    const auto w_hh = rnn->weight_hh.t();
    for (int64_t t = 0; t < x.size(1); ++t) h = torch::sin(torch::addmm(input.select(1, t), h, w_hh));
    return out->forward(h) + mlp->forward(images.reshape({images.size(0), 784}));
  }
  SineCell rnn{nullptr};
  torch::nn::Linear out{nullptr};
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(RowReader);

Scenario z2() {
  Scenario s;
  s.id = "Z2";
  s.title = "exploding gradients in a recurrent net";
  // Measured first: an LSTM (recurrent weights x4 and x8, SGD lr 0.1 and 1.0) and a tanh RNN
  // (orthogonal recurrent weights x1-x2.5, lr 0.1-1.0) never go non-finite: their gates and
  // tanh saturate, which bounds the activations and also makes the gradients vanish (one
  // large update saturates every unit and the gradient is exactly 0 after it). A periodic
  // activation keeps the activations in [-1, 1] but its derivative does not fade, so the
  // backward product of the 28 step Jacobians grows with the recurrent gain. With orthogonal
  // recurrent weights x1.5 and SGD lr 0.1 the gain drifts past that point: the gradient of
  // rnn.weight_hh jumps from ~10 to 1e3-1e6 within 2-3 steps, then the backward matrix product
  // overflows float32 (unguarded: step 49, 32, 35 for seeds 0-2) while the loss stays flat.
  // 96 hidden units: with 64 the explosion came at steps 17-23 on two seeds, before the
  // monitor's warm-up, and the hidden size equalled the batch size. Gain 1.45 failed on one
  // seed of three, 1.6 within 10 steps; reading the rows twice made the clean twin diverge
  // too. The MLP beside the RNN makes the twin train steadily (83-86% in 2 epochs); the sine
  // RNN alone trains erratically (tens of points between seeds), too noisy for a 1-point bar.
  s.trigger = "sine RNN(96) over the 28 image rows beside an MLP, recurrent weights orthogonal x1.5, SGD lr 0.1, no "
              "clipping (clean twin: x1.0)";
  s.true_cause = "exploding_gradients";
  s.expected_phase = "backward";
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = mnist_run(ctx);
    run.epochs = ctx.epochs > 0 ? ctx.epochs : 2;
    RowReader model(96, ctx.inject_fault ? 1.5 : 1.0);
    run.model = model.ptr();
    run.forward = [model](const at::Tensor& x) mutable { return model->forward(x); };
    run.loss = cross_entropy;
    run.optimizer = sgd(*run.model, 0.1);
    return run;
  };
  return s;
}

// Z3/Z4: the loss is written by hand on logits scaled by `scale`; a shared flag switches it to
// the stable cross-entropy on the same logits (the guard's stable_loss repair, and the clean
// twin, which starts stable).
using LogitLoss = std::function<at::Tensor(const at::Tensor& logits, const at::Tensor& y)>;

void use_switchable_loss(ScenarioRun& run, const BuildContext& ctx, double scale, LogitLoss unstable) {
  auto stable = std::make_shared<bool>(!ctx.inject_fault);
  run.loss = [stable, scale, unstable](const at::Tensor& z, const at::Tensor& y) {
    auto logits = z * scale;
    return *stable ? cross_entropy(logits, y) : unstable(logits, y);
  };
  run.use_stable_loss = [stable] {
    *stable = true;
    return true;
  };
}

Scenario z3() {
  Scenario s;
  s.id = "Z3";
  s.title = "log of a softmax that underflows";
  // Logits x50: float32 exp underflows to exactly 0 once two logits differ by more than
  // ~103.9 (exp(-103.9) is below the smallest denormal), i.e. by ~2.1 before scaling. Glorot
  // init already gives such spreads on some rows of the first batch, so log(0) = -inf appears
  // at step 0 and 0 * -inf = NaN in the sum; the stable cross_entropy on the same x50 logits
  // is the clean twin (Adam is invariant to the x50 gradient scale).
  s.trigger = "hand-written loss -(y * log(softmax(50 z))).sum(), MLP, Adam 1e-3";
  s.true_cause = "unsafe_loss";
  s.true_subkind = "log_of_zero";
  s.expected_birth_op = "aten::log";
  s.expected_phase = "forward";
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = healthy(ctx);
    use_switchable_loss(run, ctx, 50.0, [](const at::Tensor& logits, const at::Tensor& y) {
      auto p = torch::softmax(logits, 1);
      return -(torch::one_hot(y, 10).to(p.dtype()) * torch::log(p)).sum(1).mean();
    });
    return run;
  };
  return s;
}

Scenario z4() {
  Scenario s;
  s.id = "Z4";
  s.title = "exp overflow in a hand-written softmax";
  // exp overflows float32 above ~88.72. Logits x200 put the largest logit of most rows of the
  // first batch above 88 (glorot logits reach ~0.5-1), so exp gives +inf, inf/inf = NaN. The
  // clean twin is the stable cross_entropy on the same x200 logits (it subtracts the max).
  s.trigger = "hand-written softmax exp(200 z) / exp(200 z).sum(), then -log p[y], MLP, Adam 1e-3";
  s.true_cause = "unsafe_loss";
  s.true_subkind = "exp_overflow";
  s.expected_birth_op = "aten::exp";
  s.expected_phase = "forward";
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = healthy(ctx);
    use_switchable_loss(run, ctx, 200.0, [](const at::Tensor& logits, const at::Tensor& y) {
      auto e = torch::exp(logits);
      auto p = e / e.sum(1, true);
      return -(torch::one_hot(y, 10).to(p.dtype()) * torch::log(p)).sum(1).mean();
    });
    return run;
  };
  return s;
}

// Dataset ids that Z5 and Z8 corrupt: all below 1000, so the small test runs hold them too.
const std::vector<int64_t> kCorrupted{7, 123, 345, 678, 901};

Scenario z5() {
  Scenario s;
  s.id = "Z5";
  s.title = "NaN and Inf in five training samples";
  // Three samples get a NaN pixel and two an Inf pixel (the centre pixel, which is not
  // constant): every batch holding one has a non-finite loss, in the first epoch already.
  s.trigger = "NaN (ids 7, 123, 345) and +Inf (ids 678, 901) written into one pixel, MLP, Adam 1e-3";
  s.true_cause = "bad_input_data";
  s.expected_samples = kCorrupted;
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = healthy(ctx);
    if (ctx.inject_fault) {
      auto x = run.train.x().clone();
      const float nan = std::numeric_limits<float>::quiet_NaN();
      const float inf = std::numeric_limits<float>::infinity();
      for (size_t i = 0; i < kCorrupted.size(); ++i) {
        if (kCorrupted[i] < x.size(0)) x[kCorrupted[i]][14][14] = i < 3 ? nan : inf;
      }
      run.train = data::TensorDataset(x, run.train.y(), run.train.ids());
    }
    return run;
  };
  return s;
}

Scenario z6() {
  Scenario s;
  s.id = "Z6";
  s.title = "transient fault in one gradient";
  // One NaN in the first layer's weight gradient at step 40 (inside the first epoch), only on
  // the first execution of that step: a replay from the same state and batch is finite.
  s.trigger = "one NaN written into layers.1.dense.weight.grad at step 40, first execution only";
  s.true_cause = "transient_fault";
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = healthy(ctx);
    if (ctx.inject_fault) {
      auto model = run.model;
      run.after_backward = [model](const StepInfo& info) {
        if (info.step != 40 || info.execution != 0) return;
        torch::NoGradGuard no_grad;
        for (auto& p : model->named_parameters()) {
          if (p.key().find("weight") == std::string::npos || !p.value().grad().defined()) continue;
          p.value().grad().view({-1})[0] = std::numeric_limits<float>::quiet_NaN();
          return;
        }
      };
    }
    return run;
  };
  return s;
}

Scenario z7() {
  Scenario s;
  s.id = "Z7";
  s.title = "vanishing gradients in a deep sigmoid MLP";
  // 20 sigmoid layers of 64 with N(0,1) weights: the sigmoids saturate, and each layer's
  // derivative (<= 0.25) shrinks the gradient further, so the first layers barely move and the
  // run stays near chance. Nothing goes non-finite. The clean twin uses relu with He init,
  // which trains. The guard keeps the structure and re-initialises the weights to fit it
  // (init_inspection.h): it is judged against the twin like every repair.
  s.trigger = "MLP with 20 sigmoid layers of 64, N(0,1) init, SGD lr 0.1 (clean twin: relu, He init)";
  s.true_cause = "vanishing_gradients";
  s.also_correct = {"bad_initialization"};
  s.produces_nonfinite = false;
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = mnist_run(ctx);
    const std::vector<int64_t> hidden(20, 64);
    SequentialModel model = ctx.inject_fault ? mlp(hidden, "sigmoid") : mlp(hidden, "relu", "he_normal");
    if (ctx.inject_fault) {
      torch::NoGradGuard no_grad;
      for (auto& p : model->named_parameters()) {
        if (p.key().find("weight") != std::string::npos) p.value().normal_(0.0, 1.0);
      }
    }
    set_model(run, model);
    run.loss = cross_entropy;
    run.optimizer = sgd(*run.model, ctx.inject_fault ? 0.1 : 0.01);
    return run;
  };
  return s;
}

Scenario z8() {
  Scenario s;
  s.id = "Z8";
  s.title = "extreme but finite outliers in five training samples";
  // Four corner pixels of five images (always 0 in MNIST) set to 1e6: finite, but they
  // dominate those samples' logits through random first-layer weights, so the samples are
  // misclassified with a huge margin and their gradient is ~1e6 times a normal one. Scaling the
  // whole image by 1e6 did nothing here: leaky_relu is positively homogeneous, a scaled image
  // keeps its (mostly correct) prediction with a saturated softmax, and its gradient is exactly
  // 0. With SGD lr 0.1 and leaky_relu (which cannot die and stop the growth) each outlier batch
  // inflates the weights until the run goes non-finite at step 116-145 (seeds 0-2).
  s.trigger = "pixels (0,0)-(0,3) of ids 7, 123, 345, 678, 901 set to 1e6, MLP (leaky_relu), SGD lr 0.1";
  s.true_cause = "data_outlier";
  s.expected_samples = kCorrupted;
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = mnist_run(ctx);
    if (ctx.inject_fault) {
      auto x = run.train.x().clone();
      for (int64_t id : kCorrupted) {
        if (id < x.size(0)) x[id][0].narrow(0, 0, 4).fill_(1e6);
      }
      run.train = data::TensorDataset(x, run.train.y(), run.train.ids());
    }
    set_model(run, mlp({128}, "leaky_relu"));
    run.loss = cross_entropy;
    run.optimizer = sgd(*run.model, 0.1);
    return run;
  };
  return s;
}

// Z9-Z11: the article's MLP (784-128 relu-10, as healthy() builds it) trained with plain SGD
// at a learning rate too high for it: the first updates are so large that nearly every relu
// unit ends up with a negative pre-activation for every image and never recovers (no gradient
// flows through a dead relu), so the run stays finite and ends at chance. The clean twin of all
// three is the same MLP on 0-1 pixels at SGD lr 0.1, the usual plain-SGD default: it trains to
// 87.8%, 87.2%, 88.1% (seeds 0-2), one point below Adam's Z0.
ScenarioRun article_mlp_sgd(const BuildContext& ctx, double divisor, double lr) {
  ScenarioRun run = mnist_run(ctx, ctx.inject_fault ? divisor : 255.0);
  set_model(run, mlp({128}, "relu"));
  run.loss = cross_entropy;
  run.optimizer = sgd(*run.model, ctx.inject_fault ? lr : 0.1);
  return run;
}

Scenario z9() {
  Scenario s;
  s.id = "Z9";
  s.title = "finite divergence: SGD lr 3 on the article's MLP";
  // Measured unguarded (seeds 0-2): never non-finite; final 10.2%, 10.8%, 8.9%. The loss grows
  // x2.5 per step over the first steps (2.3 to 88 by step 4 on seed 0), and 123 of the 128
  // hidden units end dead (2000 images, 2 epochs, in the unit test).
  s.trigger = "MLP 784-128-10 (relu) on 0-1 pixels, plain SGD lr 3.0 (clean twin: lr 0.1)";
  s.true_cause = "lr_too_high";
  s.true_subkind = "divergence";
  s.produces_nonfinite = false;
  s.build = [](const BuildContext& ctx) { return article_mlp_sgd(ctx, 255.0, 3.0); };
  return s;
}

Scenario z10() {
  Scenario s;
  s.id = "Z10";
  s.title = "finite divergence: SGD lr 30 on the article's MLP";
  // Measured unguarded (seeds 0-2): never non-finite; final 10.8%, 8.8%, 8.9%. One step is
  // enough: the loss is 251 at step 1 (seed 0), the weights reach ~3e3 and 126 of the 128 hidden
  // units are dead (unit test).
  s.trigger = "MLP 784-128-10 (relu) on 0-1 pixels, plain SGD lr 30 (clean twin: lr 0.1)";
  s.true_cause = "lr_too_high";
  s.true_subkind = "divergence";
  s.produces_nonfinite = false;
  s.build = [](const BuildContext& ctx) { return article_mlp_sgd(ctx, 255.0, 30.0); };
  return s;
}

Scenario z11() {
  Scenario s;
  s.id = "Z11";
  s.title = "unscaled inputs: the article's MLP on raw 0-255 pixels";
  // Raw pixels make the first layer's pre-activations and gradients 255x larger, so lr 0.1 acts
  // like a far larger one. Measured unguarded (seeds 0-2): never non-finite; final 11.7%, 11.8%,
  // 11.8%. The loss is 118 at step 0 and 1.5e5 at step 1 (seed 0); 126 of the 128 hidden units
  // die (unit test). The true cause is the data's scale (the clean twin is the same lr on 0-1
  // pixels); a learning-rate diagnosis is also right, since a lower lr trains too.
  s.trigger = "MLP 784-128-10 (relu) on raw 0-255 pixels, SGD lr 0.1 (clean twin: 0-1 pixels, same lr)";
  s.true_cause = "unscaled_inputs";
  s.also_correct = {"lr_too_high"};
  s.produces_nonfinite = false;
  s.build = [](const BuildContext& ctx) { return article_mlp_sgd(ctx, 1.0, 0.1); };
  return s;
}

// An LSTM (64 units, torch::nn::LSTM) reading the 28 image rows, its last hidden state read out
// by a linear layer. Parameter names follow torch::nn::LSTM ("lstm.weight_ih_l0", ...).
struct LstmReaderImpl : torch::nn::Module {
  explicit LstmReaderImpl(int64_t hidden) {
    lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(28, hidden).batch_first(true)));
    out = register_module("out", torch::nn::Linear(hidden, 10));
  }
  at::Tensor forward(const at::Tensor& images) {
    auto x = images.reshape({images.size(0), 28, 28});
    auto h = std::get<0>(lstm->forward(x));  // [N, 28, hidden]
    return out->forward(h.select(1, h.size(1) - 1));
  }
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Linear out{nullptr};
};
TORCH_MODULE(LstmReader);

Scenario z12() {
  Scenario s;
  s.id = "Z12";
  s.title = "dead start: an LSTM whose gates saturate from step 0";
  // torch::nn::LSTM has two bias vectors per layer (bias_ih, bias_hh); 15 in each puts every
  // gate's pre-activation near +30, far above what the inputs and recurrent weights (|w| <=
  // 1/sqrt(32)) can move. In float32 sigmoid(30) and tanh(30) are exactly 1, so each gate's
  // derivative is exactly 0: the cell counts c_t = t, the last hidden state is tanh(28) = 1 for
  // every image, the LSTM's gradients are exactly 0 (no update can ever leave the start) and
  // the read-out sees a constant. Measured unguarded (seeds 0-2): never non-finite, final 8.9%, 11.7%, 8.9%; the
  // clean twin (default init, uniform +-1/sqrt(32)) trains to 81.3%, 82.0%, 83.8%. 32 units and
  // Adam 5e-3: 64 units at 2e-3 reached 83% on seed 0 at twice the cost (8.6 s against 4.6 s per
  // run here, under load; Z2 took 4.2 s); 2 epochs reached only 72-80%.
  s.trigger = "LSTM(32) over the 28 image rows, every gate bias initialised to +30, Adam 5e-3 (clean twin: "
              "default init)";
  s.true_cause = "bad_initialization";
  s.also_correct = {"vanishing_gradients"};
  s.produces_nonfinite = false;
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = mnist_run(ctx);
    LstmReader model(32);
    if (ctx.inject_fault) {
      torch::NoGradGuard no_grad;
      for (auto& p : model->lstm->named_parameters()) {
        if (p.key().rfind("bias", 0) == 0) p.value().fill_(15.0);  // bias_ih + bias_hh = 30 per gate
      }
    }
    run.model = model.ptr();
    run.forward = [model](const at::Tensor& x) mutable { return model->forward(x); };
    run.loss = cross_entropy;
    run.optimizer = adam(*run.model, 5e-3);
    return run;
  };
  return s;
}

Scenario z13() {
  Scenario s;
  s.id = "Z13";
  s.title = "Adam with epsilon 0";
  // LibTorch's Adam divides the first moment by sqrt(second moment) + eps. A weight whose
  // gradient is exactly 0 on every step (the first layer's weights of the always-blank corner
  // pixels) has both moments 0, and with eps 0 its update is 0/0 = NaN. Measured unguarded
  // (seeds 0-2): the loss of step 0 is finite, the weights are NaN after its update (first
  // non-finite at step 0 in every seed), the loss is NaN from step 1; the clean twin (eps 1e-8,
  // Adam's default, i.e. Z0) trains to 89.5%, 88.9%, 89.8%. The first NaN is born in the
  // optimizer (the guard's replay names aten::addcdiv_).
  s.trigger = "MLP 784-128-10 (relu), Adam 1e-3 with eps 0; MNIST's corner pixels are always 0, so their "
              "first-layer weights get a gradient of exactly 0 (clean twin: eps 1e-8)";
  s.true_cause = "optimizer_setting";
  s.true_subkind = "zero_epsilon";
  s.expected_phase = "optimizer";
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = healthy(ctx);
    run.optimizer = std::make_shared<torch::optim::Adam>(
        run.model->parameters(), torch::optim::AdamOptions(1e-3).eps(ctx.inject_fault ? 0.0 : 1e-8));
    return run;
  };
  return s;
}

// Training samples that Z14 and Z15 make blank (every pixel 0). Z14's are those of Z5/Z8; Z15
// adds one more in the second thousand, so a run of 2000 images holds them all.
const std::vector<int64_t> kBlank{7, 123, 345, 678, 901, 1234};

data::TensorDataset with_blank_samples(const data::TensorDataset& d, const std::vector<int64_t>& ids) {
  auto x = d.x().clone();
  for (int64_t id : ids) {
    if (id < x.size(0)) x[id].zero_();
  }
  return data::TensorDataset(x, d.y(), d.ids());
}

// Single-head self-attention over the 28 image rows as tokens: keys whose row is blank (all
// pixels 0) are masked with -inf before the softmax, the usual padding mask.
struct RowAttentionImpl : torch::nn::Module {
  explicit RowAttentionImpl(int64_t dim) : dim(dim) {
    embed = register_module("embed", torch::nn::Linear(28, dim));
    position = register_parameter("position", torch::randn({28, dim}) * 0.1);
    query = register_module("query", torch::nn::Linear(dim, dim));
    key = register_module("key", torch::nn::Linear(dim, dim));
    value = register_module("value", torch::nn::Linear(dim, dim));
    out = register_module("out", torch::nn::Linear(28 * dim, 10));
  }
  at::Tensor forward(const at::Tensor& images) {
    auto x = images.reshape({images.size(0), 28, 28});
    auto blank = (x.abs().sum(-1) == 0).unsqueeze(1);  // [N, 1, 28]: masked keys
    auto e = embed->forward(x) + position;
    auto scores = torch::matmul(query->forward(e), key->forward(e).transpose(1, 2)) / std::sqrt(double(dim));
    auto attention = torch::softmax(scores.masked_fill(blank, -std::numeric_limits<float>::infinity()), -1);
    auto h = torch::matmul(attention, value->forward(e)) + e;
    return out->forward(h.flatten(1));
  }
  int64_t dim;
  torch::nn::Linear embed{nullptr}, query{nullptr}, key{nullptr}, value{nullptr}, out{nullptr};
  at::Tensor position;
};
TORCH_MODULE(RowAttention);

Scenario z14() {
  Scenario s;
  s.id = "Z14";
  s.title = "softmax over a fully masked attention row";
  // Every MNIST digit has non-blank rows, so a partly masked row attends to those; a blank image
  // masks all 28 keys, every score of its rows is -inf and softmax computes exp(-inf - (-inf)) =
  // NaN. masked_fill only writes the -inf (deliberately, like any padding mask); the tracer
  // records the first NaN in aten::_softmax (inside aten::softmax), from inputs without a NaN
  // (checked in the unit test). Measured unguarded (seeds 0-2): the loss is NaN at the first
  // batch holding a blank sample, step 26, 39, 3; the clean twin trains to 88.0%, 87.5%, 87.8%.
  s.trigger = "self-attention over the 28 image rows, blank rows masked with -inf; ids 7, 123, 345, 678, 901 "
              "made blank, so every key of theirs is masked and softmax gives 0/0 (clean twin: no blank samples)";
  s.true_cause = "fully_masked_row";
  s.expected_birth_op = "aten::_softmax";
  s.expected_phase = "forward";
  s.expected_samples = kCorrupted;
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = mnist_run(ctx);
    if (ctx.inject_fault) run.train = with_blank_samples(run.train, kCorrupted);
    RowAttention model(32);
    run.model = model.ptr();
    run.forward = [model](const at::Tensor& x) mutable { return model->forward(x); };
    run.loss = cross_entropy;
    run.optimizer = adam(*run.model);
    return run;
  };
  return s;
}

Scenario z15() {
  Scenario s;
  s.id = "Z15";
  s.title = "per-sample normalisation of blank samples";
  // A blank sample has mean 0 and std 0, so (x - mean) / std is 0/0 = NaN at aten::div; other
  // samples are unaffected. Six ids, so that over 3 epochs they arrive in many different
  // batches. Measured unguarded (seeds 0-2): the loss is NaN at the first batch holding one,
  // step 26, 3, 3; the clean twin trains to 90.0%, 90.5%, 90.7%. The cause is the data (blank
  // samples); the division is where it shows.
  s.trigger = "(x - mean) / std per sample in the forward, MLP 784-128-10 (relu), Adam 1e-3; ids 7, 123, 345, "
              "678, 901, 1234 made blank, so their std is 0 and 0/0 = NaN (clean twin: no blank samples)";
  s.true_cause = "bad_input_data";
  s.expected_birth_op = "aten::div";
  s.expected_phase = "forward";
  s.expected_samples = kBlank;
  s.build = [](const BuildContext& ctx) {
    ScenarioRun run = healthy(ctx);
    if (ctx.inject_fault) run.train = with_blank_samples(run.train, kBlank);
    auto inner = run.forward;
    run.forward = [inner](const at::Tensor& x) {
      const auto flat = x.reshape({x.size(0), -1});
      const auto mean = flat.mean(1, true);
      const auto std = flat.std(1, /*unbiased=*/true, /*keepdim=*/true);
      return inner(((flat - mean) / std).reshape(x.sizes()));
    };
    return run;
  };
  return s;
}

}  // namespace

const std::vector<Scenario>& builtin_scenarios() {
  static const std::vector<Scenario> all{z0(), z1(), z2(),  z3(),  z4(),  z5(),  z6(),  z7(),
                                         z8(), z9(), z10(), z11(), z12(), z13(), z14(), z15()};
  return all;
}

const Scenario& builtin_scenario(const std::string& id) {
  std::string want = id;
  std::transform(want.begin(), want.end(), want.begin(), [](unsigned char c) { return std::toupper(c); });
  std::vector<std::string> ids;
  for (const auto& s : builtin_scenarios()) {
    if (s.id == want) return s;
    ids.push_back(s.id);
  }
  throw ValueError(fmt::format("zoo: unknown scenario '{}' (expected one of: {})", id, fmt::join(ids, ", ")));
}

}  // namespace nanguard::zoo

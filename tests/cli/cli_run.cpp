#include "cli/cli_run.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace nanguard::cli_test {

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() / ("nanguard-cli-test-" + std::to_string(::getpid()) + "-" +
                                                    std::to_string(counter++) + "-" + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  // nftw, as in tests/support: best effort, a leftover file must not fail a test.
  ::nftw(
      path_.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p), 0; }, 16,
      FTW_DEPTH | FTW_PHYS);
}

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CliResult run_cli(const std::vector<std::string>& args, const std::filesystem::path& cwd, int timeout_s) {
  TempDir io;
  const std::string out_path = (io / "stdout").string(), err_path = (io / "stderr").string();
  const std::string dir = cwd.string();
  // Everything the child needs is built before fork: it only calls async-signal-safe functions.
  std::vector<std::string> argv_strings{NANGUARD_CLI};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) return {-1, "", "fork failed"};
  if (pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int null = ::open("/dev/null", O_RDONLY);
    if (out < 0 || err < 0 || null < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0 || ::dup2(null, 0) < 0 ||
        ::chdir(dir.c_str()) != 0) {
      ::_exit(125);
    }
    ::execv(argv[0], argv.data());
    ::_exit(126);
  }
  CliResult r;
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool timed_out = false;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.out = read_bytes(out_path);
  r.err = read_bytes(err_path);
  if (timed_out) {
    r.code = -1;
    r.err += "\n(killed after " + std::to_string(timeout_s) + " s)";
  } else if (WIFEXITED(status)) {
    r.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    r.code = 128 + WTERMSIG(status);
  }
  return r;
}

std::string describe(const CliResult& r) {
  return "exit " + std::to_string(r.code) + "\n--- stdout ---\n" + r.out + "\n--- stderr ---\n" + r.err;
}

::testing::AssertionResult contains_all(const std::string& text, std::initializer_list<std::string> needles) {
  for (const auto& needle : needles) {
    if (text.find(needle) == std::string::npos) {
      return ::testing::AssertionFailure() << "lacks \"" << needle << "\" in:\n" << text;
    }
  }
  return ::testing::AssertionSuccess();
}

void write_tiny_csv(const std::filesystem::path& dir, int rows, int nan_row) {
  // Class c has feature c near 3 and the others near 0: a linear model separates them.
  auto table = [&](int n, int offset, int bad) {
    std::ostringstream csv;
    csv << "x1,x2,x3,x4,y\n";
    for (int i = 0; i < n; ++i) {
      const int c = (i + offset) % 3;
      for (int f = 0; f < 4; ++f) {
        const double noise = 0.1 * std::sin(1.7 * (i + offset) + 2.3 * f);
        if (i == bad && f == 0) {
          csv << "nan";
        } else {
          csv << (f == c ? 3.0 : 0.0) + noise;
        }
        csv << ",";
      }
      csv << c << "\n";
    }
    return csv.str();
  };
  write_bytes(dir / "train.csv", table(rows, 0, nan_row));
  write_bytes(dir / "test.csv", table(24, 1, -1));
}

std::string tiny_config(const std::string& extra) {
  return R"(name = "tiny"
loss = "sparse_categorical_crossentropy"
optimizer = { type = "sgd", learning_rate = 0.1 }
metrics = ["accuracy"]

[data]
source = "csv"
train = "train.csv"
test = "test.csv"
label = "y"
validation = "none"

[fit]
epochs = 1
batch_size = 16
seed = 1

[model]
input_shape = [4]
[[model.layers]]
type = "dense"
units = 3
activation = "softmax"
)" + extra;
}

std::filesystem::path write_tiny_run(const std::filesystem::path& dir, const std::string& extra, int nan_row) {
  write_tiny_csv(dir, 48, nan_row);
  write_bytes(dir / "tiny.toml", tiny_config(extra));
  return dir / "tiny.toml";
}

// IDX bytes: zeros, the type code, the number of dimensions, each dimension as a big-endian
// int32, then the values.
static std::string idx(uint8_t dims, std::initializer_list<uint32_t> shape, const std::string& values) {
  std::string out{'\0', '\0', '\x08', static_cast<char>(dims)};
  for (uint32_t d : shape) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  return out + values;
}

// The four MNIST files in DIR, with `train` and `test` pseudo-random images and labels 0-9.
void write_fake_mnist(const std::filesystem::path& dir, uint32_t train, uint32_t test) {
  std::filesystem::create_directories(dir);
  uint32_t state = 3;
  auto images = [&](uint32_t n) {
    std::string pixels(size_t{n} * 28 * 28, '\0');
    for (char& p : pixels) p = static_cast<char>((state = state * 1664525u + 1013904223u) >> 24);
    return idx(3, {n, 28, 28}, pixels);
  };
  auto labels = [](uint32_t n) {
    std::string values(n, '\0');
    for (uint32_t i = 0; i < n; ++i) values[i] = static_cast<char>(i % 10);
    return idx(1, {n}, values);
  };
  write_bytes(dir / "train-images-idx3-ubyte", images(train));
  write_bytes(dir / "train-labels-idx1-ubyte", labels(train));
  write_bytes(dir / "t10k-images-idx3-ubyte", images(test));
  write_bytes(dir / "t10k-labels-idx1-ubyte", labels(test));
}

}  // namespace nanguard::cli_test

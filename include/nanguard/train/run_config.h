// A whole training run described in one TOML file: data, model, compile options and fit
// options. See examples/mnist_mlp.toml for the article's example.
#pragma once

#include <filesystem>
#include <string>

#include "nanguard/data/source.h"
#include "nanguard/train/model.h"
#include "nanguard/train/trainer.h"

namespace nanguard {

struct RunConfig {
  std::string name;                  // defaults to the file's stem
  std::filesystem::path source;      // the file it was read from
  data::DataSource data;             // relative paths are resolved against the file's folder
  ModelSpec model;
  CompileOptions compile;
  FitOptions fit;
};

// Parses "cpu", "cuda" or "cuda:N"; anything else throws ValueError naming what it got.
c10::Device parse_device(const std::string& text);

// Reads and validates a config file. Unknown keys, wrong types and bad values throw
// ValueError naming the file, the key and its line; a missing file throws IoError.
RunConfig load_run_config(const std::filesystem::path& path);
// The same from text (source_name is used in messages and to resolve relative paths).
RunConfig parse_run_config(const std::string& text, const std::filesystem::path& source_name);

}  // namespace nanguard

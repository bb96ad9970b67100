// Private: reading a ModelSpec from the [model] table of a TOML file.
//
//   [model]
//   input_shape = [28, 28]
//   [[model.layers]]
//   type = "flatten"
//   [[model.layers]]
//   type = "dense"
//   units = 128
//   activation = "relu"
//
// Every layer key is the LayerSpec option of the same name; kernel_size, strides and pool_size
// take a number or [height, width].
#pragma once

#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "nanguard/train/model.h"

namespace nanguard {

// Reads the table under [model]. Unknown keys (also keys of another layer type), missing or
// wrongly typed values and out-of-range values throw ValueError naming the key path
// ("layers[1].units"), what was expected and found, and source_name:line. Shapes are checked
// later, when the model is built (or by infer_output_shapes).
ModelSpec model_spec_from_toml(const toml::table& model_table, const std::string& source_name);

// Parses TOML text and reads its [model] table; syntax errors throw ValueError with line and
// column.
ModelSpec model_spec_from_toml_text(std::string_view text, const std::string& source_name);

}  // namespace nanguard

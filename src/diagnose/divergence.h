// The causes of a finite divergence (Evidence::diverged): a learning rate too high for the
// model, and inputs far from unit range, which make any learning rate too high for the first
// layer. Called by diagnose() instead of the non-finite rules.
#pragma once

#include <vector>

#include "nanguard/diagnose/diagnosis.h"

namespace nanguard::detail {

void diagnose_divergence(const Evidence& evidence, std::vector<CauseScore>& out);

}  // namespace nanguard::detail

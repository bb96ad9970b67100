// An incident as bytes, for the data-parallel broadcast: the rank that found it sends its
// evidence and diagnosis, and every rank acts on the same incident. CBOR keeps NaN and Inf
// (JSON text would turn them into null).
#pragma once

#include <memory>
#include <string>

#include "nanguard/guard/incident.h"

namespace nanguard::detail {

std::string encode_incident(const Incident& incident);
// ValueError when the bytes are not an encoded incident.
std::shared_ptr<Incident> decode_incident(const std::string& bytes);

}  // namespace nanguard::detail

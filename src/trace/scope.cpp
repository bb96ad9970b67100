#include "nanguard/trace/scope.h"

#include <vector>

namespace nanguard::trace {
namespace {

std::vector<std::string>& stack() {
  thread_local std::vector<std::string> names = [] {
    std::vector<std::string> v;
    v.reserve(16);
    return v;
  }();
  return names;
}

}  // namespace

Scope::Scope(std::string_view name) { stack().emplace_back(name); }

Scope::~Scope() { stack().pop_back(); }

std::string Scope::current() {
  std::string path;
  for (const auto& name : stack()) {
    if (!path.empty()) path += '.';
    path += name;
  }
  return path;
}

size_t Scope::depth() { return stack().size(); }

}  // namespace nanguard::trace

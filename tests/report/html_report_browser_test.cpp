// Opens the report of a real guarded run in headless Chromium (no network) and checks what
// the browser rendered: no errors, every chart drawn by Vega-Lite, one card per incident.
// The screenshot is kept as a test artifact under the build tree.
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <sys/wait.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "guarded_run.h"
#include "nanguard/report/html_report.h"
#include "support/test_support.h"

namespace nanguard::report {
namespace {

using nanguard::testing::read_bytes;
using nanguard::testing::TempDir;

std::string find_chromium() {
  if (const char* env = std::getenv("NANGUARD_CHROMIUM"); env && *env) return env;
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"}) {
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

// Where artifacts go: next to the test data folder of the build tree, else the working folder.
std::filesystem::path artifact_dir() {
  const char* data = std::getenv("NANGUARD_TEST_DATA");
  const auto base = data && *data ? std::filesystem::path(data).parent_path() : std::filesystem::current_path();
  const auto dir = base / "artifacts" / "report";
  std::filesystem::create_directories(dir);
  return dir;
}

int run_command(const std::string& command, std::string* output) {
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return -1;
  char buf[8192];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) output->append(buf, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Headless, no GPU, and no way out to the network: every host name resolves to nothing and
// every connection goes to a closed proxy port.
std::string chromium_command(const std::string& chromium, const std::filesystem::path& profile, const std::string& action,
                             const std::filesystem::path& page) {
  return fmt::format(
      "timeout 120 '{}' --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
      "--disable-background-networking --disable-component-update --disable-sync --disable-extensions "
      "--host-resolver-rules='MAP * ~NOTFOUND' --proxy-server=127.0.0.1:9 --user-data-dir='{}' "
      "--enable-logging=stderr --v=0 --virtual-time-budget=20000 --window-size=1280,3000 {} 'file://{}'",
      chromium, profile.string(), action, page.string());
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

std::string attribute(const std::string& dom, const std::string& name) {
  std::smatch m;
  const std::regex re(name + "=\"([^\"]*)\"");
  return std::regex_search(dom, m, re) ? m[1].str() : std::string("(absent)");
}

TEST(HtmlReportBrowser, GuardedRunReportRendersInHeadlessChromium) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs Debian's chromium)";
  if (find_chart_scripts().empty()) {
    GTEST_SKIP() << "the Vega-Lite scripts are missing (scripts/setup.sh fetches them into third_party/vega)";
  }
  const auto artifacts = artifact_dir();
  const auto run_dir = artifacts / "guarded_run";
  nanguard::testing::remove_tree(run_dir);
  const auto guarded = nanguard::testing::write_guarded_run(run_dir);
  ASSERT_GT(guarded.incidents, 0u) << "the scenario must produce an incident";
  const auto page = std::filesystem::absolute(run_dir / "report.html");
  const auto problems = write_report(run_dir, page);
  EXPECT_TRUE(problems.empty());
  const size_t charts = report_charts(read_run(run_dir)).size();
  ASSERT_GE(charts, 5u);  // loss, accuracy, lr, total and per-layer gradient norms, signals

  TempDir profile;
  std::string dom;
  const int rc = run_command(chromium_command(chromium, profile.path(), "--dump-dom", page) + " 2>" +
                                 (artifacts / "chromium_dump.log").string(),
                             &dom);
  ASSERT_EQ(rc, 0) << "chromium failed; see " << (artifacts / "chromium_dump.log");
  {
    std::ofstream(artifacts / "report_dom.html") << dom;
  }
  const std::string log = read_bytes(artifacts / "chromium_dump.log");
  EXPECT_EQ(attribute(dom, "data-report-status"), "done") << "the page script did not finish";
  EXPECT_EQ(attribute(dom, "data-errors"), "0") << "errors recorded by the page; see " << artifacts / "report_dom.html";
  EXPECT_EQ(log.find("Uncaught"), std::string::npos) << log;
  EXPECT_EQ(attribute(dom, "data-charts-rendered"), std::to_string(charts));
  // vega-embed draws each chart as one <svg class="marks"> inside its container.
  EXPECT_EQ(count(dom, "class=\"marks\""), charts);
  // Markers: one rule group per chart (every chart has events to mark).
  EXPECT_EQ(count(dom, "mark-rule role-mark"), charts);
  EXPECT_EQ(count(dom, "<article class=\"card incident\""), guarded.incidents);
  EXPECT_EQ(count(dom, "<figure class=\"histogram\">"), 1u);

  const auto screenshot = artifacts / "report.png";
  std::filesystem::remove(screenshot);
  std::string ignored;
  const int shot_rc =
      run_command(fmt::format("cd '{}' && ", artifacts.string()) +
                      chromium_command(chromium, profile.path(), "--screenshot='" + screenshot.string() + "'", page) +
                      " >/dev/null 2>&1",
                  &ignored);
  ASSERT_EQ(shot_rc, 0);
  ASSERT_TRUE(std::filesystem::exists(screenshot));
  const std::string png = read_bytes(screenshot);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  EXPECT_GT(png.size(), 20000u) << "a blank page compresses to a few kilobytes";
  std::cout << "[ artifact ] screenshot: " << screenshot.string() << "\n";
}

}  // namespace
}  // namespace nanguard::report

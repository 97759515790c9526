// Test helpers: scrape /metrics over loopback HTTP and read sample values out of the text.
#include "tests/deploy/metrics_text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>

namespace llm::metrics::testing {

std::optional<double> SampleValue(std::string_view text, std::string_view series) {
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    // "<series> <value>[ <timestamp>]"; label values here never contain "} ".
    const size_t split = line.find(line.find('{') == std::string::npos ? " " : "} ");
    if (split == std::string::npos) continue;
    const size_t series_end = line[split] == '}' ? split + 1 : split;
    if (std::string_view(line).substr(0, series_end) != series) continue;
    return std::stod(line.substr(series_end + 1));
  }
  return std::nullopt;
}

std::optional<std::string> ScrapeLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.find(" 200 ") == std::string::npos || body == std::string::npos) return std::nullopt;
  return response.substr(body + 4);
}

}  // namespace llm::metrics::testing

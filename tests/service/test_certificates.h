// Self-signed test PKI made with the openssl CLI (Debian package `openssl`): a CA, a server
// certificate for localhost / 127.0.0.1 and a client certificate, all signed by the CA, written as
// PEM files into a directory. Tests skip (with a message) when openssl is missing.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace llm::testing {

struct TestCertificates {
  std::filesystem::path dir;
  std::filesystem::path ca() const { return dir / "ca.pem"; }
  std::filesystem::path server_cert() const { return dir / "server.pem"; }
  std::filesystem::path server_key() const { return dir / "server.key"; }
  std::filesystem::path client_cert() const { return dir / "client.pem"; }
  std::filesystem::path client_key() const { return dir / "client.key"; }
  // A second CA that signed nothing the server trusts.
  std::filesystem::path other_ca() const { return dir / "other_ca.pem"; }
};

inline bool HaveOpenssl() { return std::system("openssl version > /dev/null 2>&1") == 0; }

inline std::string ReadTextFile(const std::filesystem::path& path) {
  std::ifstream file(path);
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

// Returns false (the reason in openssl.log in `dir`) when a command failed.
inline bool MakeTestCertificates(const std::filesystem::path& dir, TestCertificates* out) {
  std::filesystem::create_directories(dir);
  out->dir = dir;
  std::ofstream(dir / "server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  const std::string d = dir.string();
  const std::string script =
      "cd '" + d +
      "' && ("
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=llm-test-ca -keyout ca.key -out ca.pem && "
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=llm-other-ca -keyout other_ca.key -out other_ca.pem && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost "
      "-keyout server.key -out server.csr && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile server.ext -out server.pem && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=llm-client "
      "-keyout client.key -out client.csr && "
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-out client.pem) > openssl.log 2>&1";
  return std::system(script.c_str()) == 0;
}

}  // namespace llm::testing

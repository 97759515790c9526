// llm-server: loads a checkpoint, starts the engine and serves llm.v1 over gRPC until SIGINT/SIGTERM.
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/engine/engine.h"
#include "server/model/checkpoint.h"
#include "server/model/transformer.h"
#include "server/service/backend_selection.h"
#include "server/service/grpc_server.h"
#include "server/service/tls_config.h"
#include "server/text/tokenizer.h"
#if LLM_HAVE_SERVER_METRICS
#include "server/metrics/memory_sample.h"
#include "server/metrics/server_metrics.h"
#endif

ABSL_FLAG(std::string, model, "",
          "Hugging Face checkpoint directory (config.json + *.safetensors). Empty: the bundled "
          "default model (models/default in the source tree, or share/llm-inference/models/default "
          "of an installation).");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on.");
ABSL_FLAG(int, port, 50051, "gRPC port; 0 picks a free one (printed at startup).");
ABSL_FLAG(int, metrics_port, 0,
          "Port of the Prometheus /metrics endpoint (on --metrics_host). 0 = no metrics.");
ABSL_FLAG(std::string, metrics_host, "",
          "Address /metrics listens on (e.g. 127.0.0.1 to keep it off the public interface); "
          "empty = --host.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the server; with --tls_key turns on TLS (docs/SECURITY.md).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).");
ABSL_FLAG(std::string, api_keys_file, "",
          "File of API keys, one per line ('#' comments). When this or $LLM_API_KEYS (comma "
          "separated) gives keys, every llm.v1 call needs `authorization: Bearer <key>` or "
          "`x-api-key: <key>`; health and reflection stay open.");
ABSL_FLAG(int, max_message_bytes, 4 << 20,
          "Largest request message in bytes; larger ones fail RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_prompt_tokens, 0,
          "Most prompt tokens in one Prefill/Generate (INVALID_ARGUMENT above); 0 = the model's "
          "max_position_embeddings only.");
ABSL_FLAG(int, max_tokens_limit, 0,
          "Largest Generate max_tokens accepted (INVALID_ARGUMENT above); 0 = the model's "
          "max_position_embeddings only.");
ABSL_FLAG(int, max_requests_per_client, 0,
          "Most Prefill/Decode/Generate calls in flight per client (per API key, or per peer "
          "address without keys); more fail RESOURCE_EXHAUSTED. 0 = no limit.");
ABSL_FLAG(int, max_sequences_per_client, 0,
          "Most sequences one client may hold (created by Prefill, not yet released or expired); "
          "a Prefill past it fails RESOURCE_EXHAUSTED. 0 = no limit.");
ABSL_FLAG(std::string, backend, "auto", "Compute backend: auto (CUDA if available, else CPU), cpu, cuda.");
ABSL_FLAG(int64_t, kv_cache_bytes, 256ll << 20,
          "Memory budget of the paged KV cache in bytes; sets the number of blocks unless "
          "--kv_blocks is given.");
ABSL_FLAG(int, kv_blocks, 0, "Number of KV blocks; overrides --kv_cache_bytes when > 0.");
ABSL_FLAG(int, block_size, 16, "Tokens per KV block.");
ABSL_FLAG(int, max_batch_tokens, 512, "Most query tokens (decode + prefill chunks) in one engine step.");
ABSL_FLAG(int, max_sequences, 64, "Most sequences in one engine step.");
ABSL_FLAG(int, max_waiting, 1024, "Most requests queued for KV space before RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, max_queue_wait, absl::Seconds(30),
          "Longest a request waits for KV space before RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, sequence_ttl, absl::Minutes(10),
          "Sequences from Prefill idle for this long are released.");
ABSL_FLAG(int, default_max_tokens, 16, "Generate's max_tokens when a request leaves it 0.");
ABSL_FLAG(bool, prefix_cache, true,
          "Share the KV blocks of common prompt prefixes between sequences and keep released blocks "
          "cached until their space is needed (server/engine/README.md).");
ABSL_FLAG(int, threads, 0, "CPU backend threads (0 = all cores).");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "On SIGINT/SIGTERM, how long in-flight requests may run before they are cancelled.");

namespace llm {
namespace {

void Log(const std::string& line) {
  std::fprintf(stderr, "%s llm-server: %s\n",
               absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
               line.c_str());
}

std::filesystem::path ExecutableDirectory() {
  std::error_code error;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::filesystem::path() : self.parent_path();
}

// The bundled model: the source tree (developer builds), then next to the binary, then the install
// prefix, then /usr/share.
absl::StatusOr<std::filesystem::path> DefaultModelDirectory() {
  const std::filesystem::path exe = ExecutableDirectory();
  const std::vector<std::filesystem::path> candidates = {
      LLM_SOURCE_DEFAULT_MODEL_DIR,
      exe / "models/default",
      exe / "../share/llm-inference/models/default",
      std::filesystem::path(LLM_INSTALL_DATA_DIR) / "models/default",
      "/usr/share/llm-inference/models/default",
  };
  std::string tried;
  for (const std::filesystem::path& candidate : candidates) {
    if (std::filesystem::exists(candidate / "config.json")) return candidate.lexically_normal();
    absl::StrAppend(&tried, tried.empty() ? "" : ", ", candidate.string());
  }
  return absl::NotFoundError(
      absl::StrCat("no default model found (looked in ", tried, "); pass --model=<checkpoint dir>"));
}

// The checkpoint directory's base name, for the llm_model_info label.
std::string ModelName(const std::filesystem::path& directory) {
  std::filesystem::path normal = directory.lexically_normal();
  if (!normal.has_filename()) normal = normal.parent_path();
  return normal.filename().string();
}

std::string Bytes(size_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

std::string MetricsHost() {
  const std::string host = absl::GetFlag(FLAGS_metrics_host);
  return host.empty() ? absl::GetFlag(FLAGS_host) : host;
}

// Keys from --api_keys_file and $LLM_API_KEYS together; none = no authentication.
absl::StatusOr<service::ApiKeySet> LoadApiKeys() {
  const char* env = std::getenv("LLM_API_KEYS");
  return service::ApiKeySet::Load(absl::GetFlag(FLAGS_api_keys_file), env != nullptr ? env : "");
}

sem_t stop_semaphore;
std::atomic<int> stop_signal{0};

// Async-signal-safe: an atomic store and sem_post. Later signals (during the drain) are absorbed.
void OnStopSignal(int signal_number) {
  stop_signal.store(signal_number);
  sem_post(&stop_semaphore);
}

int Run() {
  // SIGINT/SIGTERM run a handler that only posts a semaphore, whichever thread they land on: some
  // threads (OpenBLAS's pool) start before main and do not block signals, so masking plus sigwait
  // let a second SIGTERM during the drain hit one of them and kill the process.
  sem_init(&stop_semaphore, 0, 0);
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::filesystem::path model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) {
    absl::StatusOr<std::filesystem::path> found = DefaultModelDirectory();
    if (!found.ok()) {
      Log(std::string(found.status().message()));
      return 2;
    }
    model_dir = *found;
  }
  const int block_size = absl::GetFlag(FLAGS_block_size);
  if (block_size <= 0) {
    Log(absl::StrCat("--block_size=", block_size, " must be positive"));
    return 2;
  }

  // Transport security and access limits; a bad setting stops the server before it listens.
  const service::TlsFiles tls_files{.cert_path = absl::GetFlag(FLAGS_tls_cert),
                                    .key_path = absl::GetFlag(FLAGS_tls_key),
                                    .client_ca_path = absl::GetFlag(FLAGS_tls_client_ca)};
  service::GrpcServerOptions server_options;
  if (absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
          service::MakeServerCredentials(tls_files);
      credentials.ok()) {
    server_options.credentials = *std::move(credentials);
  } else {
    Log(std::string(credentials.status().message()));
    return 2;
  }
  if (absl::StatusOr<service::ApiKeySet> keys = LoadApiKeys(); keys.ok()) {
    server_options.access.api_keys = *std::move(keys);
  } else {
    Log(std::string(keys.status().message()));
    return 2;
  }
  server_options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  server_options.access.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  server_options.access.max_tokens_limit = absl::GetFlag(FLAGS_max_tokens_limit);
  server_options.access.max_requests_per_client = absl::GetFlag(FLAGS_max_requests_per_client);
  server_options.access.max_sequences_per_client = absl::GetFlag(FLAGS_max_sequences_per_client);
  server_options.access.ownership_ttl = absl::GetFlag(FLAGS_sequence_ttl) + absl::Minutes(1);
  Log(absl::StrFormat("transport %s, %s, max message %d bytes",
                      service::TransportSecurityName(tls_files),
                      server_options.access.api_keys.empty()
                          ? "no API keys (unauthenticated)"
                          : absl::StrCat(server_options.access.api_keys.size(), " API key(s)"),
                      server_options.max_message_bytes));

  // Metrics first, so that their interceptors see every call from the start.
  service::GrpcServer::InterceptorFactories interceptors;
#if LLM_HAVE_SERVER_METRICS
  std::unique_ptr<metrics::ServerMetrics> server_metrics;
  if (absl::GetFlag(FLAGS_metrics_port) != 0) {
    absl::StatusOr<std::unique_ptr<metrics::ServerMetrics>> started = metrics::ServerMetrics::Start(
        {.bind_address = absl::StrCat(MetricsHost(), ":", absl::GetFlag(FLAGS_metrics_port)),
         .replica_id = ""});
    if (!started.ok()) {
      Log(absl::StrCat("starting /metrics failed: ", started.status().message()));
      return 1;
    }
    server_metrics = *std::move(started);
    interceptors = server_metrics->MakeInterceptors();
    Log(absl::StrFormat("metrics on http://%s:%d/metrics", MetricsHost(),
                        server_metrics->port()));
  }
#else
  if (absl::GetFlag(FLAGS_metrics_port) != 0) {
    Log(absl::StrCat("--metrics_port=", absl::GetFlag(FLAGS_metrics_port),
                     " ignored: this llm-server was built without the metrics module"));
  }
#endif

  // Listen before loading: clients get UNAVAILABLE and health NOT_SERVING while the model loads.
  const std::string address =
      absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_port));
  absl::StatusOr<std::unique_ptr<service::GrpcServer>> server =
      service::GrpcServer::Start(address, std::move(interceptors), std::move(server_options));
  if (!server.ok()) {
    Log(std::string(server.status().message()));
    return 1;
  }
  Log(absl::StrFormat("listening on %s:%d (NOT_SERVING until the model is loaded)",
                      absl::GetFlag(FLAGS_host), (*server)->port()));

  absl::StatusOr<service::BackendChoice> backend =
      service::SelectBackend(absl::GetFlag(FLAGS_backend), absl::GetFlag(FLAGS_threads));
  if (!backend.ok()) {
    Log(std::string(backend.status().message()));
    return 2;
  }
  Log(backend->reason);

  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) {
    Log(absl::StrCat("loading the checkpoint failed: ", checkpoint.status().message()));
    return 1;
  }
  const ModelConfig& config = (*checkpoint)->config();
  // Text in and out when the checkpoint ships a sentencepiece model; token ids always work.
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(model_dir / "tokenizer.model")) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::Load(model_dir / "tokenizer.model");
    if (!loaded.ok()) {
      Log(absl::StrCat("loading the tokenizer failed: ", loaded.status().message()));
      return 1;
    }
    if ((*loaded)->vocab_size() > config.vocab_size) {
      Log(absl::StrFormat("%s has %d pieces but the model's vocab_size is %d; they do not belong "
                          "together", (model_dir / "tokenizer.model").string(),
                          (*loaded)->vocab_size(), config.vocab_size));
      return 1;
    }
    tokenizer = *std::move(loaded);
    Log(absl::StrFormat("tokenizer: %s (%d pieces); text prompts get BOS id %d",
                        tokenizer->path().string(), tokenizer->vocab_size(), config.bos_token_id));
  } else {
    Log(absl::StrCat("no tokenizer.model in ", model_dir.string(), ": token ids only"));
  }
  const size_t block_bytes = KvBlockBytes(config, block_size, backend->backend->compute_dtype());
  int kv_blocks = absl::GetFlag(FLAGS_kv_blocks);
  if (kv_blocks <= 0) {
    kv_blocks = static_cast<int>(absl::GetFlag(FLAGS_kv_cache_bytes) / static_cast<int64_t>(block_bytes));
  }
  if (kv_blocks <= 0) {
    Log(absl::StrFormat("--kv_cache_bytes=%d holds no KV block of %d bytes; raise it",
                        absl::GetFlag(FLAGS_kv_cache_bytes), block_bytes));
    return 2;
  }
  TransformerOptions transformer_options{.kv_num_blocks = kv_blocks,
                                         .kv_block_size = block_size,
                                         .max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens),
                                         .max_batch_sequences = absl::GetFlag(FLAGS_max_sequences)};
  absl::StatusOr<std::unique_ptr<Transformer>> model =
      Transformer::Create(**checkpoint, *backend->backend, transformer_options);
  if (!model.ok()) {
    Log(absl::StrCat("creating the model failed: ", model.status().message()));
    return 1;
  }
  Log(absl::StrFormat(
      "loaded %s from %s: %d layers, hidden %d, %d/%d q/kv heads, vocab %d, max positions %d; "
      "weights %s (%s), KV cache %s (%d blocks x %d tokens = %d tokens), workspace %s, in %s",
      config.architecture, model_dir.string(), config.num_hidden_layers, config.hidden_size,
      config.num_attention_heads, config.num_key_value_heads, config.vocab_size,
      config.max_position_embeddings, Bytes((*model)->weight_bytes()),
      DTypeName(backend->backend->compute_dtype()), Bytes((*model)->kv_cache_bytes()), kv_blocks,
      block_size, kv_blocks * block_size, Bytes((*model)->workspace_bytes()),
      absl::FormatDuration(absl::Now() - load_start)));

#if LLM_HAVE_SERVER_METRICS
  const metrics::MemorySample memory = metrics::ToMemorySample(**model);
#endif
  engine::EngineOptions engine_options{
      .max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens),
      .max_running_sequences = absl::GetFlag(FLAGS_max_sequences),
      .max_waiting_requests = absl::GetFlag(FLAGS_max_waiting),
      .max_queue_wait = absl::GetFlag(FLAGS_max_queue_wait),
      .sequence_ttl = absl::GetFlag(FLAGS_sequence_ttl),
      .default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens)};
  engine_options.enable_prefix_cache = absl::GetFlag(FLAGS_prefix_cache);
  absl::StatusOr<std::unique_ptr<engine::Engine>> engine =
      engine::Engine::Create(*std::move(model), engine_options);
  if (!engine.ok()) {
    Log(absl::StrCat("creating the engine failed: ", engine.status().message()));
    return 2;
  }
  if (absl::Status warm = (*engine)->Warmup(); !warm.ok()) {
    Log(std::string(warm.message()));
    return 1;
  }
  engine::EngineObserver* observer = nullptr;
#if LLM_HAVE_SERVER_METRICS
  if (server_metrics != nullptr) {
    server_metrics->AttachEngine(
        **engine,
        {.model = ModelName(model_dir),
         .architecture = config.architecture,
         .backend = (*engine)->backend_name(),
         .dtype = std::string(DTypeName((*engine)->compute_dtype())),
         .server_version = ""},
        memory);
    observer = server_metrics->engine_observer();
  }
#endif
  (*engine)->Start(observer);
  (*server)->AttachEngine(engine->get(), model_dir.string(), tokenizer.get());
  Log(absl::StrFormat("SERVING llm.v1.LlmService on %s:%d", absl::GetFlag(FLAGS_host),
                      (*server)->port()));

  while (sem_wait(&stop_semaphore) != 0) {
  }
  const int signal_number = stop_signal.load();
  const absl::Duration grace = absl::GetFlag(FLAGS_shutdown_grace);
  Log(absl::StrFormat("received %s; draining (grace %s)", strsignal(signal_number),
                      absl::FormatDuration(grace)));
  (*server)->Drain(grace);
  server->reset();
  Log("engine drained and gRPC server stopped");
#if LLM_HAVE_SERVER_METRICS
  server_metrics.reset();  // its scrapes read the engine
#endif
  engine->reset();
  Log("stopped");
  return 0;
}

}  // namespace
}  // namespace llm

// Abseil flags are spelled with underscores; operators (and the Kubernetes manifests) often write
// dashes. "--kv-cache-bytes=1G" is rewritten to "--kv_cache_bytes=1G"; values are left alone.
std::vector<std::string> NormalizeFlagSpelling(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& arg = args[i];
    if (arg == "--") break;
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) continue;
    const size_t name_end = std::min(arg.find('='), arg.size());
    std::replace(arg.begin() + 2, arg.begin() + name_end, '-', '_');
  }
  return args;
}

int main(int argc, char** argv) {
  std::vector<std::string> args = NormalizeFlagSpelling(argc, argv);
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  // --help lists this program's own flags (Abseil's default matches files named like the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "server/service/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "Serves a Llama-family checkpoint over gRPC (llm.v1.LlmService, grpc.health.v1, reflection).\n"
      "Example: llm-server --model=models/default --port=50051 --backend=cpu\n"
      "Flags may be spelled with dashes or underscores (--max-batch-tokens = --max_batch_tokens).");
  absl::ParseCommandLine(static_cast<int>(arg_pointers.size()), arg_pointers.data());
  return llm::Run();
}

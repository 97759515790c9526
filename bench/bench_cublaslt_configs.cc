// llm-bench-cublaslt: how fast cuBLASLt runs the decode step's products (TinyLlama-1.1B shapes:
// qkv, o, gate_up, down) at batches of 8-64 rows with each algorithm its heuristic offers and,
// where the algorithm takes one, a forced split-K count. A diagnostic for the batched decode step
// (docs/PERFORMANCE.md): which configuration streams the weights fastest at a few rows.
//
// Each timing cycles through enough copies of w (>= 160 MB) that no product finds its weights in
// the 50 MB L2, as in a decode step. Prints a table (best per shape first) and writes JSON.
//
// usage: llm-bench-cublaslt [--json FILE]   ($LLM_BENCH_LT_ROWS="8,32,64" picks the batches;
//        $LLM_BENCH_LT_ALL=1 also times every listed algorithm id x tile x stages x split-K 1/2/4)
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_check.h"

namespace {

#define CHECK_LT(call)                                                         \
  do {                                                                         \
    const cublasStatus_t status_ = (call);                                     \
    if (status_ != CUBLAS_STATUS_SUCCESS) {                                    \
      std::fprintf(stderr, "%s:%d %s: status %d\n", __FILE__, __LINE__, #call, \
                   static_cast<int>(status_));                                 \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

struct Shape {
  const char* name;
  int n, k;
  bool accumulate;  // o and down add into the residual (beta = 1)
};

struct Result {
  std::string shape;
  int m, n, k, candidate, split_k;
  double microseconds, weight_tb_per_s;
  std::string config;  // enumerated configurations ($LLM_BENCH_LT_ALL): "algo A tile T stages S"
};

constexpr size_t kWorkspaceBytes = 32u << 20;
constexpr size_t kRotationBytes = 160u << 20;

}  // namespace

int main(int argc, char** argv) {
  const char* json_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) json_path = argv[++i];
  }
  std::vector<int> row_counts = {8, 32, 64};
  if (const char* env = std::getenv("LLM_BENCH_LT_ROWS"); env != nullptr && *env != '\0') {
    row_counts.clear();
    for (const char* p = env; *p != '\0';) {
      row_counts.push_back(std::atoi(p));
      while (*p != '\0' && *p != ',') ++p;
      if (*p == ',') ++p;
    }
  }
  const Shape shapes[] = {{"qkv", 2560, 2048, false},
                          {"o", 2048, 2048, true},
                          {"gate_up", 11264, 2048, false},
                          {"down", 2048, 5632, true}};

  cublasLtHandle_t handle;
  CHECK_LT(cublasLtCreate(&handle));
  void* workspace = nullptr;
  BENCH_CHECK(cudaMalloc(&workspace, kWorkspaceBytes));
  cudaStream_t stream;
  BENCH_CHECK(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  BENCH_CHECK(cudaEventCreate(&start));
  BENCH_CHECK(cudaEventCreate(&stop));

  std::vector<Result> results;
  for (const Shape& shape : shapes) {
    const size_t w_bytes = size_t{2} * shape.n * shape.k;
    const int copies = static_cast<int>(std::max<size_t>(2, kRotationBytes / w_bytes + 1));
    std::vector<void*> weights(copies);
    for (void*& w : weights) {
      BENCH_CHECK(cudaMalloc(&w, w_bytes));
      BENCH_CHECK(cudaMemset(w, 0x3c, w_bytes));  // 0x3c3c: a small finite bf16
    }
    for (int m : row_counts) {
      void *x = nullptr, *out = nullptr;
      BENCH_CHECK(cudaMalloc(&x, size_t{2} * m * shape.k));
      BENCH_CHECK(cudaMemset(x, 0x3c, size_t{2} * m * shape.k));
      BENCH_CHECK(cudaMalloc(&out, size_t{2} * m * shape.n));
      BENCH_CHECK(cudaMemset(out, 0, size_t{2} * m * shape.n));

      // The backend's layout (kernels/cuda/matmul.cc): out^T [n, m] = op_T(w^T [k, n]) x^T [k, m].
      cublasLtMatmulDesc_t operation;
      CHECK_LT(cublasLtMatmulDescCreate(&operation, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t transpose = CUBLAS_OP_T, no_transpose = CUBLAS_OP_N;
      CHECK_LT(cublasLtMatmulDescSetAttribute(operation, CUBLASLT_MATMUL_DESC_TRANSA, &transpose,
                                              sizeof(transpose)));
      CHECK_LT(cublasLtMatmulDescSetAttribute(operation, CUBLASLT_MATMUL_DESC_TRANSB, &no_transpose,
                                              sizeof(no_transpose)));
      cublasLtMatrixLayout_t a, b, c;
      CHECK_LT(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, shape.k, shape.n, shape.k));
      CHECK_LT(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, shape.k, m, shape.k));
      CHECK_LT(cublasLtMatrixLayoutCreate(&c, CUDA_R_16BF, shape.n, m, shape.n));
      cublasLtMatmulPreference_t preference;
      CHECK_LT(cublasLtMatmulPreferenceCreate(&preference));
      const uint64_t workspace_limit = kWorkspaceBytes;
      CHECK_LT(cublasLtMatmulPreferenceSetAttribute(preference,
                                                    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace_limit, sizeof(workspace_limit)));
      cublasLtMatmulHeuristicResult_t heuristic[32];
      int found = 0;
      CHECK_LT(cublasLtMatmulAlgoGetHeuristic(handle, operation, a, b, c, c, preference, 32,
                                              heuristic, &found));
      const float alpha = 1.f, beta = shape.accumulate ? 1.f : 0.f;

      auto time_algorithm = [&](const cublasLtMatmulAlgo_t& algorithm) -> double {
        auto run = [&](int i) {
          return cublasLtMatmul(handle, operation, &alpha, weights[i % copies], a, x, b, &beta, out,
                                c, out, c, &algorithm, workspace, kWorkspaceBytes, stream);
        };
        for (int i = 0; i < 10; ++i) {
          if (run(i) != CUBLAS_STATUS_SUCCESS) return -1.0;
        }
        constexpr int kIterations = 200;
        BENCH_CHECK(cudaEventRecord(start, stream));
        for (int i = 0; i < kIterations; ++i) {
          if (run(i) != CUBLAS_STATUS_SUCCESS) return -1.0;
        }
        BENCH_CHECK(cudaEventRecord(stop, stream));
        BENCH_CHECK(cudaEventSynchronize(stop));
        float ms = 0.f;
        BENCH_CHECK(cudaEventElapsedTime(&ms, start, stop));
        return 1000.0 * ms / kIterations;
      };
      auto record = [&](int candidate, int split_k, double us, std::string config = "") {
        if (us <= 0.0) return;
        results.push_back({shape.name, m, shape.n, shape.k, candidate, split_k, us,
                           w_bytes / (us * 1e-6) / 1e12, config});
      };
      for (int i = 0; i < found; ++i) {
        record(i, 0, time_algorithm(heuristic[i].algo));
        for (int split_k : {2, 3, 4, 6, 8, 16}) {
          cublasLtMatmulAlgo_t algorithm = heuristic[i].algo;
          if (cublasLtMatmulAlgoConfigSetAttribute(&algorithm, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                   &split_k,
                                                   sizeof(split_k)) != CUBLAS_STATUS_SUCCESS) {
            continue;
          }
          cublasLtMatmulHeuristicResult_t checked{};
          if (cublasLtMatmulAlgoCheck(handle, operation, a, b, c, c, &algorithm, &checked) !=
                  CUBLAS_STATUS_SUCCESS ||
              checked.workspaceSize > kWorkspaceBytes) {
            continue;
          }
          record(i, split_k, time_algorithm(algorithm));
        }
      }
      // $LLM_BENCH_LT_ALL=1: beyond the heuristic's few, every algorithm id the library lists for
      // these types, at each tile and stage count it supports, with split-K 1 / 2 / 4 where it
      // takes one (candidate -1; the configuration is printed).
      if (const char* all = std::getenv("LLM_BENCH_LT_ALL"); all != nullptr && all[0] == '1') {
        int ids[128];
        int id_count = 0;
        CHECK_LT(cublasLtMatmulAlgoGetIds(handle, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF,
                                          CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, 128, ids,
                                          &id_count));
        int tried = 0;
        for (int i = 0; i < id_count; ++i) {
          cublasLtMatmulAlgo_t base;
          if (cublasLtMatmulAlgoInit(handle, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF,
                                     CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF, ids[i],
                                     &base) != CUBLAS_STATUS_SUCCESS) {
            continue;
          }
          auto capability = [&](cublasLtMatmulAlgoCapAttributes_t attribute) {
            size_t bytes = 0;
            cublasLtMatmulAlgoCapGetAttribute(&base, attribute, nullptr, 0, &bytes);
            std::vector<uint32_t> values(bytes / sizeof(uint32_t));
            if (!values.empty()) {
              cublasLtMatmulAlgoCapGetAttribute(&base, attribute, values.data(), bytes, &bytes);
            }
            if (values.empty()) values.push_back(0);  // the default
            return values;
          };
          const std::vector<uint32_t> tiles = capability(CUBLASLT_ALGO_CAP_TILE_IDS);
          const std::vector<uint32_t> stages = capability(CUBLASLT_ALGO_CAP_STAGES_IDS);
          int32_t split_support = 0;
          size_t written = 0;
          cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &split_support,
                                            sizeof(split_support), &written);
          for (uint32_t tile : tiles) {
            for (uint32_t stage : stages) {
              for (int split_k : {1, 2, 4}) {
                if (split_k > 1 && !split_support) continue;
                cublasLtMatmulAlgo_t algorithm = base;
                cublasLtMatmulAlgoConfigSetAttribute(&algorithm, CUBLASLT_ALGO_CONFIG_TILE_ID,
                                                     &tile, sizeof(tile));
                cublasLtMatmulAlgoConfigSetAttribute(&algorithm, CUBLASLT_ALGO_CONFIG_STAGES_ID,
                                                     &stage, sizeof(stage));
                cublasLtMatmulAlgoConfigSetAttribute(&algorithm, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                     &split_k, sizeof(split_k));
                cublasLtMatmulHeuristicResult_t checked{};
                if (cublasLtMatmulAlgoCheck(handle, operation, a, b, c, c, &algorithm, &checked) !=
                        CUBLAS_STATUS_SUCCESS ||
                    checked.workspaceSize > kWorkspaceBytes) {
                  continue;
                }
                ++tried;
                record(-1, split_k, time_algorithm(algorithm),
                       "algo " + std::to_string(ids[i]) + " tile " + std::to_string(tile) +
                           " stages " + std::to_string(stage));
              }
            }
          }
        }
        std::printf("%-8s m=%-3d %d algorithm ids, %d configurations timed\n", shape.name, m,
                    id_count, tried);
        (void)cudaGetLastError();
      }
      BENCH_CHECK(cudaGetLastError());
      cublasLtMatmulPreferenceDestroy(preference);
      cublasLtMatrixLayoutDestroy(a);
      cublasLtMatrixLayoutDestroy(b);
      cublasLtMatrixLayoutDestroy(c);
      cublasLtMatmulDescDestroy(operation);
      BENCH_CHECK(cudaFree(x));
      BENCH_CHECK(cudaFree(out));
      std::printf("%-8s m=%-3d heuristic offered %d algorithms\n", shape.name, m, found);
    }
    for (void* w : weights) BENCH_CHECK(cudaFree(w));
  }

  // Per (shape, m): the heuristic's first pick, then the five fastest configurations.
  std::printf("\n%-8s %4s %9s %8s %10s %12s\n", "product", "m", "candidate", "split-k", "us",
              "weights TB/s");
  for (const Shape& shape : shapes) {
    for (int m : row_counts) {
      std::vector<Result> mine;
      for (const Result& r : results) {
        if (r.shape == shape.name && r.m == m) mine.push_back(r);
      }
      if (mine.empty()) continue;
      const Result first = *std::find_if(mine.begin(), mine.end(), [](const Result& r) {
        return r.candidate == 0 && r.split_k == 0;
      });
      std::sort(mine.begin(), mine.end(),
                [](const Result& x, const Result& y) { return x.microseconds < y.microseconds; });
      std::printf("%-8s %4d %9s %8s %10.2f %12.2f   (heuristic's pick)\n", shape.name, m, "0", "-",
                  first.microseconds, first.weight_tb_per_s);
      for (size_t i = 0; i < mine.size() && i < 5; ++i) {
        std::printf("%-8s %4d %9d %8d %10.2f %12.2f   %s\n", shape.name, m, mine[i].candidate,
                    mine[i].split_k, mine[i].microseconds, mine[i].weight_tb_per_s,
                    mine[i].config.c_str());
      }
    }
  }
  if (json_path != nullptr) {
    FILE* file = std::fopen(json_path, "w");
    if (file != nullptr) {
      std::fprintf(file, "[\n");
      for (size_t i = 0; i < results.size(); ++i) {
        const Result& r = results[i];
        std::fprintf(
            file,
            "  {\"product\": \"%s\", \"m\": %d, \"n\": %d, \"k\": %d, \"candidate\": %d, "
            "\"split_k\": %d, \"us\": %.3f, \"weights_tb_per_s\": %.3f, \"config\": \"%s\"}%s\n",
            r.shape.c_str(), r.m, r.n, r.k, r.candidate, r.split_k, r.microseconds,
            r.weight_tb_per_s, r.config.c_str(), i + 1 < results.size() ? "," : "");
      }
      std::fprintf(file, "]\n");
      std::fclose(file);
    }
  }
  cublasLtDestroy(handle);
  return 0;
}

// Shared pieces of the kernel benchmarks: one result row, and the JSON writer.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

namespace llm::bench {

struct Result {
  std::string section;  // "prefill", "decode", "copy", "decode_step"
  std::string shape;    // human-readable shape key, matched by bench/compare.py
  double median_ms = 0;
  double tflops = 0;        // prefill
  double gbytes_per_s = 0;  // decode, copy
  std::string note;
};

inline void WriteJson(const std::string& path, const std::string& device,
                      const std::vector<Result>& results) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    return;
  }
  std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"results\": [\n", device.c_str());
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    std::fprintf(
        f,
        "    {\"section\": \"%s\", \"shape\": \"%s\", \"median_ms\": %.6f, \"tflops\": %.3f, "
        "\"gbytes_per_s\": %.2f, \"note\": \"%s\"}%s\n",
        r.section.c_str(), r.shape.c_str(), r.median_ms, r.tflops, r.gbytes_per_s, r.note.c_str(),
        i + 1 < results.size() ? "," : "");
  }
  std::fprintf(f, "  ]\n}\n");
  std::fclose(f);
}

// End-to-end decode step of a TinyLlama-1.1B-shaped model with random weights
// (bench_decode_step.cc); appends one result per batch size. Empty when the transformer is not
// built.
std::vector<Result> RunDecodeStepBench(int context_tokens, const std::vector<int>& batch_sizes,
                                       int iterations);

// What one step of a dependent chain costs: a graphed launch (empty, with a dependent L2 read,
// with a DRAM read), a grid barrier in one cooperative launch, graphed launches streaming 1-16 MB
// each, and the batch-1 products' weights read row by row (bench_boundary.cu, --sections
// boundary).
void BenchKernelBoundary(cudaStream_t stream, int sms, std::vector<Result>& results);

// How many bytes a second one SM takes in from DRAM at 16 blocks to one per SM, by loads or bulk
// copies, with and without L2 reads beside the stream (bench_intake.cu, --sections intake).
void BenchSmIntake(cudaStream_t stream, int sms, std::vector<Result>& results);

}  // namespace llm::bench

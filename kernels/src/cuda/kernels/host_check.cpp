// Host build of the kernels' dequantization (OASIS_HOST), for the CPU test that checks the
// GPU formulas against the CPU kernels without a GPU. Reads a type id, a row length and
// the row's bytes from stdin; writes the row's values as f32 to stdout.
#define OASIS_HOST
#include "common.cuh"
#include <cstdio>
#include <vector>

template <int T> static void run(const std::vector<u8>& row, int k) {
  std::vector<float> out(k);
  for (int u = 0; u < k / 32; u++) dequant_unit<T>(row.data(), u, out.data() + 32 * u);
  fwrite(out.data(), 4, out.size(), stdout);
}

int main() {
  int t, k;
  if (fread(&t, 4, 1, stdin) != 1 || fread(&k, 4, 1, stdin) != 1) return 2;
  std::vector<u8> row(row_bytes(t, k));
  if (fread(row.data(), 1, row.size(), stdin) != row.size()) return 3;
  switch (t) {
    case T_F32: run<T_F32>(row, k); break;
    case T_F16: run<T_F16>(row, k); break;
    case T_BF16: run<T_BF16>(row, k); break;
    case T_Q4_0: run<T_Q4_0>(row, k); break;
    case T_Q4_1: run<T_Q4_1>(row, k); break;
    case T_Q8_0: run<T_Q8_0>(row, k); break;
    case T_Q4_K: run<T_Q4_K>(row, k); break;
    case T_Q5_K: run<T_Q5_K>(row, k); break;
    case T_Q6_K: run<T_Q6_K>(row, k); break;
    default: return 4;
  }
  return 0;
}

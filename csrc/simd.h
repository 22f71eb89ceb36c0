// What the processor offers beyond the baseline build, chosen at run time: GCC and Clang compile
// AVX2 and AVX-512 functions into a baseline build and say whether the processor has them;
// elsewhere (MSVC) every loop runs as the baseline (SSE2 on x86-64). Integers only, so the
// vector forms compute the same values as the baseline's.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define UNZ_X86 1
#else
#define UNZ_X86 0
#endif
#if UNZ_X86 && (defined(__GNUC__) || defined(__clang__))
#define UNZ_TARGET_AVX2 __attribute__((target("avx2")))
#define UNZ_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512vnni")))
#define UNZ_HAS_CPU_SUPPORTS 1
#else
#define UNZ_TARGET_AVX2
#define UNZ_TARGET_AVX512_VNNI
#define UNZ_HAS_CPU_SUPPORTS 0
#endif
// A loop's body, inlined into each of the versions compiled for a target.
#if defined(__GNUC__) || defined(__clang__)
#define UNZ_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define UNZ_ALWAYS_INLINE inline
#endif

namespace unz {

// Whether the processor has AVX2; AVX-512 F and VNNI. Asked at the first call, not before the
// runtime knows.
#if UNZ_HAS_CPU_SUPPORTS
#define UNZ_CPU_HAS(...) \
  static const bool has = __VA_ARGS__; \
  return has;
#else
#define UNZ_CPU_HAS(...) return false;
#endif
inline bool has_avx2() { UNZ_CPU_HAS(__builtin_cpu_supports("avx2")) }
inline bool has_avx512_vnni() { UNZ_CPU_HAS(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni")) }
#undef UNZ_CPU_HAS

}  // namespace unz

// Private: the fast path of the CSV describe pass. The separators of a stretch of text are
// found first; a plain decimal ("-12.345") is then read with integer digit arithmetic and one
// correctly rounded quotient instead of a general float parser. Anything else (exponents, long
// mantissas, words, quotes, spaces) goes to the general parser, so results are bit-identical.
#pragma once

// x86-64 gets SSE2 separator scans and an x86-64-v3 build of the cell reader; other targets the
// portable code below (which the tests also check against the SIMD versions).
#if defined(__x86_64__) && !defined(NANGUARD_PORTABLE_CSV)
#define NANGUARD_CSV_X86 1
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace nanguard::data::detail {

// Powers of ten that doubles hold exactly.
inline constexpr double kExactPow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                           1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                           1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

inline constexpr uint64_t kPow10Int[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

namespace fast {

inline double from_bits(uint64_t bits) {
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

inline uint64_t load8(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  return x;
}

// Number of leading ASCII digits among 8 little-endian bytes. A byte is a digit iff x ^ '0'
// is 0..9: its high nibble is 0 and adding 6 does not carry out of the low nibble. A carry
// into the next byte only comes from a non-digit byte, which ends the count before it.
inline int leading_digits(uint64_t x) {
  const uint64_t d = x ^ 0x3030303030303030ULL;
  const uint64_t bad = (d | (d + 0x0606060606060606ULL)) & 0xF0F0F0F0F0F0F0F0ULL;
  return bad == 0 ? 8 : __builtin_ctzll(bad) >> 3;
}

// The value of the first n (1..8) digits of x (little-endian, first character lowest).
inline uint64_t digits_value(uint64_t x, int n) {
  uint64_t v = (x - 0x3030303030303030ULL) << (8 * (8 - n));  // leading zero digits
  v = (v * 10) + (v >> 8);
  v = (((v & 0x000000FF000000FFULL) * 0x000F424000000064ULL) +
       (((v >> 16) & 0x000000FF000000FFULL) * 0x0000271000000001ULL)) >> 32;
  return static_cast<uint32_t>(v);
}

}  // namespace fast

// v, negated when negative, without a branch (the sign varies from cell to cell).
inline double with_sign(double v, bool negative) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  return fast::from_bits(bits ^ (static_cast<uint64_t>(negative) << 63));
}

// Reads a plain decimal at p: an optional sign, digits, optionally '.' and more digits, at
// least one digit, at most 19 in all. Returns the end of the number (the caller checks what
// follows), or nullptr when the text is not such a number or its value is not exact with one
// division (mantissa above 2^53); then the general parser decides. The value is correctly
// rounded: the mantissa and 10^k are exact doubles, so IEEE division rounds their quotient
// once, as strtod does. Never reads at or past e.
inline const char* parse_plain_decimal(const char* p, const char* e, double* value) {
  // The sign without a branch (it varies from cell to cell).
  const bool negative = p < e && *p == '-';
  p += negative || (p < e && *p == '+');
  uint64_t mantissa = 0;
  int int_digits = 0, frac_digits = 0;
  if (e - p >= 18) {
    // Fast: whole groups of up to 8 digits at a time, without a branch per digit.
    uint64_t x = fast::load8(p);
    int n = fast::leading_digits(x);
    if (n == 8) return nullptr;  // long integer part: leave it to the general parser
    if (n > 0) mantissa = fast::digits_value(x, n);
    int_digits = n;
    p += n;
    if (*p == '.') {
      ++p;
      x = fast::load8(p);
      n = fast::leading_digits(x);
      if (n == 8) return nullptr;
      if (n > 0) mantissa = mantissa * kPow10Int[n] + fast::digits_value(x, n);
      frac_digits = n;
      p += n;
    }
  } else {
    while (p < e && static_cast<unsigned>(*p - '0') < 10) {
      if (++int_digits > 19) return nullptr;
      mantissa = mantissa * 10 + static_cast<unsigned>(*p++ - '0');
    }
    if (p < e && *p == '.') {
      ++p;
      while (p < e && static_cast<unsigned>(*p - '0') < 10) {
        if (int_digits + ++frac_digits > 19) return nullptr;
        mantissa = mantissa * 10 + static_cast<unsigned>(*p++ - '0');
      }
    }
  }
  if (int_digits + frac_digits == 0 || mantissa > (uint64_t{1} << 53)) return nullptr;
  *value = with_sign(static_cast<double>(mantissa) / kExactPow10[frac_digits], negative);
  return p;
}

// Reciprocals 10^-k rounded to nearest.
inline constexpr double kInversePow10[17] = {1e0,  1e-1,  1e-2,  1e-3,  1e-4,  1e-5,  1e-6,  1e-7, 1e-8,
                                            1e-9, 1e-10, 1e-11, 1e-12, 1e-13, 1e-14, 1e-15, 1e-16};

// m / 10^k rounded to nearest, for m <= 2^53 and k <= 16: one IEEE division, or with FMA
// (kFma: only in code built for a CPU that has it) Markstein's correction of m * 10^-k, which
// is exactly the rounded quotient too (q = m * 10^-k is within an ulp; the remainder
// m - q * 10^k is exact; q + remainder * 10^-k then rounds to the quotient) without the
// divider, which would otherwise limit the rate.
template <bool kFma>
inline double decimal_quotient(uint64_t m, int k) {
  const double a = static_cast<double>(m);
  if constexpr (kFma) {
    const double q = a * kInversePow10[k];
    return __builtin_fma(__builtin_fma(-q, kExactPow10[k], a), kInversePow10[k], q);
  } else {
    return a / kExactPow10[k];
  }
}

// Reads the cell [p, end) when it is a plain decimal (see parse_plain_decimal) and nothing
// else; false otherwise (then the general parser decides). Cells do not depend on each other,
// so the processor overlaps several; 18 bytes from p must be readable.
template <bool kFma = false>
inline bool parse_decimal_cell(const char* p, const char* end, double* value) {
  const bool negative = *p == '-';
  p += negative || *p == '+';
  const int64_t len = end - p;
  if (len <= 0 || len > 16) return false;
  const uint64_t x = fast::load8(p);
  const int n = fast::leading_digits(x);
  uint64_t mantissa;
  int frac = 0;
  if (n >= len) {
    if (len > 8) return false;  // long integer: the general parser
    mantissa = fast::digits_value(x, static_cast<int>(len));
  } else {
    frac = static_cast<int>(len - n - 1);
    const uint64_t y = fast::load8(p + n + 1);
    if (p[n] != '.' || frac > 8 || fast::leading_digits(y) < frac || n + frac == 0) return false;
    if (n + frac <= 8 && n < 8) {
      // The common case: the digits before and after the point fit one word; joined there
      // they are converted at once.
      const uint64_t joined = (x & ((uint64_t{1} << (8 * n)) - 1)) | (y << (8 * n));
      mantissa = fast::digits_value(joined, n + frac);
    } else {
      mantissa = (n > 0 ? fast::digits_value(x, n) : 0) * kPow10Int[frac] + (frac > 0 ? fast::digits_value(y, frac) : 0);
      if (mantissa > (uint64_t{1} << 53)) return false;
    }
  }
  // The sign by a multiplication (exact, and -0 stays -0): no branch, no move to integers.
  *value = decimal_quotient<kFma>(mantissa, frac) * (negative ? -1.0 : 1.0);
  return true;
}

#ifdef NANGUARD_CSV_X86
// parse_decimal_cell<true> for x86-64-v3 CPUs, on 16 bytes at once: the digits are checked,
// moved past the point and right-aligned with one shuffle, and summed by multiply-adds.
// Same results (any plain decimal of up to 16 characters after the sign).
__attribute__((target("arch=x86-64-v3"))) inline bool parse_decimal_cell_v3(const char* p, const char* end,
                                                                           double* value) {
  const bool negative = *p == '-';
  p += negative || *p == '+';
  const int64_t len = end - p;
  if (len <= 0 || len > 16) return false;
  const __m128i text = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i digits = _mm_sub_epi8(text, _mm_set1_epi8('0'));
  const __m128i is_digit = _mm_cmpeq_epi8(_mm_min_epu8(digits, _mm_set1_epi8(9)), digits);
  const auto in_cell = static_cast<uint32_t>((1u << len) - 1);
  const auto digit_mask = static_cast<uint32_t>(_mm_movemask_epi8(is_digit)) & in_cell;
  const uint32_t dot_mask = static_cast<uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(text, _mm_set1_epi8('.')))) & in_cell;
  // Every character a digit but at most one point, and at least one digit.
  if ((digit_mask | dot_mask) != in_cell || (dot_mask & (dot_mask - 1)) != 0 || digit_mask == 0) return false;
  const int dot = dot_mask ? __builtin_ctz(dot_mask) : static_cast<int>(len);
  const int count = __builtin_popcount(digit_mask);
  const int frac = dot_mask ? static_cast<int>(len) - dot - 1 : 0;
  // Output lane j takes digit j - (16 - count), skipping the point; negative lanes are zeroed
  // by the shuffle (their top bit is set).
  __m128i index = _mm_add_epi8(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                               _mm_set1_epi8(static_cast<char>(count - 16)));
  index = _mm_sub_epi8(index, _mm_cmpgt_epi8(index, _mm_set1_epi8(static_cast<char>(dot - 1))));
  const __m128i aligned = _mm_shuffle_epi8(digits, index);
  const __m128i pairs = _mm_maddubs_epi16(aligned, _mm_setr_epi8(10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1));
  const __m128i quads = _mm_madd_epi16(pairs, _mm_setr_epi16(100, 1, 100, 1, 100, 1, 100, 1));
  const __m128i octs = _mm_madd_epi16(_mm_packus_epi32(quads, quads), _mm_setr_epi16(10000, 1, 10000, 1, 0, 0, 0, 0));
  const auto both = static_cast<uint64_t>(_mm_cvtsi128_si64(octs));
  const uint64_t mantissa = (both & 0xffffffffULL) * 100000000ULL + (both >> 32);
  if (mantissa > (uint64_t{1} << 53)) return false;
  *value = decimal_quotient<true>(mantissa, frac) * (negative ? -1.0 : 1.0);
  return true;
}

#endif  // NANGUARD_CSV_X86

// Writes the offsets from p of the delimiters and newlines in [p, e) to out (room for
// e - p + 64 entries); returns how many. *quoted tells whether [p, e) holds a quote.
size_t index_separators(const char* p, const char* e, char delimiter, uint32_t* out, bool* quoted);
// The same, a byte at a time (targets without the SIMD version).
size_t index_separators_portable(const char* p, const char* e, char delimiter, uint32_t* out, bool* quoted);

// Counts the newlines in [p, e).
inline int64_t count_newlines_portable(const char* p, const char* e) { return std::count(p, e, '\n'); }

inline int64_t count_newlines(const char* p, const char* e) {
#ifndef NANGUARD_CSV_X86
  return count_newlines_portable(p, e);
#else
  int64_t n = 0;
  const __m128i nl = _mm_set1_epi8('\n');
  while (e - p >= 16) {
    // Per-byte counters (a compare gives -1) for at most 255 blocks, then summed.
    const int64_t blocks = std::min<int64_t>((e - p) / 16, 255);
    __m128i counts = _mm_setzero_si128();
    for (int64_t i = 0; i < blocks; ++i, p += 16) {
      counts = _mm_sub_epi8(counts, _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), nl));
    }
    const __m128i sums = _mm_sad_epu8(counts, _mm_setzero_si128());
    n += _mm_cvtsi128_si64(sums) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums));
  }
  while (p < e) n += *p++ == '\n';
  return n;
#endif
}

}  // namespace nanguard::data::detail

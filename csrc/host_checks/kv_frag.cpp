// Host check of csrc/kv_frag.cuh (run by scripts/ci-cuda-check.sh; needs the CUDA headers, no
// GPU): for every format and head dim the fragment kernel takes, a random stage of 16 keys is
// laid out as issue_stage lays it out (chunks swizzled), each lane's ldmatrix words are read as
// the hardware hands them out (plain and .trans), and the A fragments that k_frags / v_frags
// build must hold exactly the cache's values at the dimensions k_dim / v_dim name. Also: both
// maps are bijections that keep each 16-dim step inside one run of 32, and every ldmatrix
// matrix reads its 8 rows from 8 different 16-byte bank groups.
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "kv_frag.cuh"

using namespace paradec::kvfrag;

namespace {

std::mt19937 rng(7);

float half_bits(uint16_t b) {
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
}

// The value a code stands for, before scales: Q4/Q8 code − c, FP8 its value, a native fp16
// value itself.
template <int F>
float value(const uint8_t *row, int dim) {
    if (F == PARADEC_KV_NATIVE) {
        uint16_t h;
        std::memcpy(&h, row + 2 * dim, 2);
        return half_bits(h);
    }
    if (F == PARADEC_KV_Q4) {
        const uint8_t b = row[dim / 2];
        return static_cast<float>(dim % 2 ? b >> 4 : b & 15) - 8.f;
    }
    const uint8_t b = row[dim];
    if (F == PARADEC_KV_Q8) return static_cast<float>(b) - 128.f;
    if (F == PARADEC_KV_E5M2) return half_bits(static_cast<uint16_t>(b << 8));
    const __half_raw r = __nv_cvt_fp8_to_halfraw(b, __NV_E4M3);
    return __half2float(__half(r));
}

// A random code byte (no NaN or infinity: the cache writer saturates; a native fp16 high byte
// never has the all-ones exponent).
template <int F>
uint8_t random_byte() {
    for (;;) {
        const uint8_t b = static_cast<uint8_t>(rng() & 255);
        if (F == PARADEC_KV_NATIVE && ((b >> 2) & 31) == 31) continue;
        if (F == PARADEC_KV_E4M3 && (b & 0x7f) == 0x7f) continue;
        if (F == PARADEC_KV_E5M2 && ((b >> 2) & 31) == 31) continue;
        return b;
    }
}

// Lane (g, t4)'s share of a 16×16 A operand: a0 = (g, 2t4 …), a1 = (g + 8, 2t4 …),
// a2 = (g, 2t4 + 8 …), a3 = (g + 8, 2t4 + 8 …), the lower column in the low half.
void scatter(const uint32_t (&a)[4], int g, int t4, float (&m)[16][16]) {
    auto put = [&](uint32_t v, int r, int c) {
        m[r][c] = half_bits(static_cast<uint16_t>(v & 0xffff));
        m[r][c + 1] = half_bits(static_cast<uint16_t>(v >> 16));
    };
    put(a[0], g, 2 * t4);
    put(a[1], g + 8, 2 * t4);
    put(a[2], g, 2 * t4 + 8);
    put(a[3], g + 8, 2 * t4 + 8);
}

template <int F, int D>
void check() {
    constexpr int CB = code_bytes(F, D), NCH = chunks(F, D), RUNS = D / 32, WPR = words_per_run(F);
    static_assert(2 * NCH == RUNS * WPR, "two words per chunk");
    std::vector<uint8_t> codes(16 * CB), stage(16 * CB);
    for (auto &b : codes) b = random_byte<F>();
    for (int key = 0; key < 16; ++key)
        for (int c = 0; c < NCH; ++c)
            std::memcpy(&stage[key * CB + swizzle(c, key, NCH) * 16], &codes[key * CB + c * 16], 16);

    std::vector<int> k_seen(D, 0), v_seen(D, 0);
    for (int kc = 0; kc < D / 16; ++kc)
        for (int p = 0; p < 16; ++p) {
            const int d = k_dim<F>(kc, p);
            CHECK(d >= 0 && d < D && d / 32 == kc / 2, "F%d D%d: k_dim(%d, %d) = %d", F, D, kc, p, d);
            if (d >= 0 && d < D) ++k_seen[d];
            const int dv = v_dim<F>(kc, p);
            CHECK(dv >= 0 && dv < D && dv / 32 == kc / 2, "F%d D%d: v_dim(%d, %d) = %d", F, D, kc, p, dv);
            if (dv >= 0 && dv < D) ++v_seen[dv];
        }
    for (int d = 0; d < D; ++d)
        CHECK(k_seen[d] == 1 && v_seen[d] == 1, "F%d D%d: dim %d taken %d / %d times", F, D, d,
              k_seen[d], v_seen[d]);

    // The row address lane l gives to ldmatrix call n.
    auto row_at = [&](int n, int lane) {
        const int key = lane_key(lane);
        return key * CB + swizzle(lane_chunk(n, lane), key, NCH) * 16;
    };
    for (int n = 0; n < NCH / 2; ++n)
        for (int j = 0; j < 4; ++j) {
            int groups = 0;
            for (int i = 0; i < 8; ++i) groups |= 1 << ((row_at(n, 8 * j + i) / 16) % 8);
            CHECK(groups == 255, "F%d D%d: ldmatrix %d matrix %d bank groups %x", F, D, n, j, groups);
        }

    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t4 = lane % 4;
        uint32_t kw[2 * NCH], vw[2 * NCH];
        for (int n = 0; n < NCH / 2; ++n)
            for (int j = 0; j < 4; ++j) {
                // plain: row g, bytes 4t4 … + 3; .trans: rows 2t4, 2t4 + 1, bytes 2g, 2g + 1
                std::memcpy(&kw[4 * n + j], &stage[row_at(n, 8 * j + g) + 4 * t4], 4);
                uint16_t lo, hi;
                std::memcpy(&lo, &stage[row_at(n, 8 * j + 2 * t4) + 2 * g], 2);
                std::memcpy(&hi, &stage[row_at(n, 8 * j + 2 * t4 + 1) + 2 * g], 2);
                vw[4 * n + j] = lo | static_cast<uint32_t>(hi) << 16;
            }
        for (int r = 0; r < RUNS; ++r) {
            uint32_t ka[2][4], va[2][4];
            k_frags<F>(kw + r * WPR, ka);
            v_frags<F>(vw + r * WPR, va);
            for (int c = 0; c < 2; ++c) {
                const int step = 2 * r + c;
                float km[16][16], vm[16][16];
                scatter(ka[c], g, t4, km);
                scatter(va[c], g, t4, vm);
                for (int row : {g, g + 8})
                    for (int col : {2 * t4, 2 * t4 + 1, 2 * t4 + 8, 2 * t4 + 9}) {
                        // K: row = key, col = position in the step; Vᵀ: row = dim, col = key.
                        const float kwant = value<F>(&codes[row * CB], k_dim<F>(step, col));
                        CHECK(km[row][col] == kwant, "F%d D%d K key %d step %d pos %d: %g, want %g",
                              F, D, row, step, col, km[row][col], kwant);
                        const float vwant = value<F>(&codes[col * CB], v_dim<F>(step, row));
                        CHECK(vm[row][col] == vwant, "F%d D%d V key %d tile %d row %d: %g, want %g",
                              F, D, col, step, row, vm[row][col], vwant);
                    }
            }
        }
    }
}

}  // namespace

int main() {
    for (int rep = 0; rep < 4; ++rep) {
        check<PARADEC_KV_Q4, 64>();
        check<PARADEC_KV_Q4, 128>();
        check<PARADEC_KV_Q8, 64>();
        check<PARADEC_KV_Q8, 128>();
        check<PARADEC_KV_E4M3, 64>();
        check<PARADEC_KV_E4M3, 128>();
        check<PARADEC_KV_E5M2, 64>();
        check<PARADEC_KV_E5M2, 128>();
        check<PARADEC_KV_NATIVE, 64>();
        check<PARADEC_KV_NATIVE, 128>();
    }
    return host_check::report("kv_frag");
}

// Host check of csrc/qkv_layout.h (run by scripts/ci-cuda-check.sh; no GPU): for every layout
// and a spread of shapes, each feature of a token's fused q/k/v row maps, by the split that
// split_qkv_kernel (csrc/attention.cu) applies — restated here as plain branches — to the part,
// head and dimension whose fused_head_offset + dimension is that feature; and every (part, head,
// dimension) is reached exactly once.
#include <vector>

#include "check.h"
#include "qkv_layout.h"

namespace {

// split_qkv_kernel's mapping of feature f: the part (0 q, 1 k, 2 v) and the index in that part's
// row of the token.
int split_part(int layout, int f, int heads, int kv_heads, int d, int &off) {
    const int per = heads / kv_heads;
    if (layout == PARADEC_QKV_PER_HEAD) {
        const int h = f / (3 * d), r = f % (3 * d);
        off = h * d + r % d;
        return r / d;
    }
    if (layout == PARADEC_QKV_QUERIES_FIRST) {
        if (f < heads * d) {
            off = f;
            return 0;
        }
        if (f < (heads + kv_heads) * d) {
            off = f - heads * d;
            return 1;
        }
        off = f - (heads + kv_heads) * d;
        return 2;
    }
    const int gw = (per + 2) * d, g = f / gw, r = f % gw;
    if (r < per * d) {
        off = g * per * d + r;
        return 0;
    }
    if (r < (per + 1) * d) {
        off = g * d + r - per * d;
        return 1;
    }
    off = g * d + r - (per + 1) * d;
    return 2;
}

}  // namespace

int main() {
    struct Shape {
        int layout, heads, kv_heads, d;
    };
    const Shape shapes[] = {
        {PARADEC_QKV_PER_HEAD, 1, 1, 8},         {PARADEC_QKV_PER_HEAD, 3, 3, 40},
        {PARADEC_QKV_PER_HEAD, 32, 32, 128},     {PARADEC_QKV_QUERIES_FIRST, 5, 1, 72},
        {PARADEC_QKV_QUERIES_FIRST, 71, 1, 64},  {PARADEC_QKV_QUERIES_FIRST, 8, 2, 16},
        {PARADEC_QKV_GROUPED, 6, 2, 64},         {PARADEC_QKV_GROUPED, 128, 8, 64},
        {PARADEC_QKV_GROUPED, 4, 4, 24},         {PARADEC_QKV_GROUPED, 9, 1, 32},
    };
    for (const Shape &s : shapes) {
        const int width = (s.heads + 2 * s.kv_heads) * s.d;
        const int rows[3] = {s.heads * s.d, s.kv_heads * s.d, s.kv_heads * s.d};
        std::vector<int> seen[3];
        for (int p = 0; p < 3; ++p) seen[p].assign(rows[p], 0);
        for (int f = 0; f < width; ++f) {
            int off = 0;
            const int part = split_part(s.layout, f, s.heads, s.kv_heads, s.d, off);
            CHECK(part >= 0 && part < 3 && off >= 0 && off < rows[part],
                  "layout %d h%d/%d d%d: feature %d splits to part %d index %d", s.layout,
                  s.heads, s.kv_heads, s.d, f, part, off);
            if (part < 0 || part >= 3 || off < 0 || off >= rows[part]) continue;
            ++seen[part][off];
            const int h = off / s.d, e = off % s.d;
            const int at =
                paradec::fused_head_offset(s.layout, part, h, s.heads, s.kv_heads, s.d) + e;
            CHECK(at == f, "layout %d h%d/%d d%d: part %d head %d dim %d at %d, the split reads %d",
                  s.layout, s.heads, s.kv_heads, s.d, part, h, e, at, f);
        }
        for (int p = 0; p < 3; ++p)
            for (int i = 0; i < rows[p]; ++i)
                CHECK(seen[p][i] == 1, "layout %d h%d/%d d%d: part %d index %d reached %d times",
                      s.layout, s.heads, s.kv_heads, s.d, p, i, seen[p][i]);
    }
    return host_check::report("qkv_layout");
}

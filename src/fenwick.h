// Fenwick (binary indexed) tree of counts over ranks 1..size, and dense ranking.
#ifndef DEEPNOMO_FENWICK_H
#define DEEPNOMO_FENWICK_H

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace deepnomo {

class Fenwick {
 public:
  explicit Fenwick(int size) : tree_(size + 1, 0) {}
  // Adds `delta` at rank r (1-based).
  void add(int r, int64_t delta) {
    const int size = static_cast<int>(tree_.size()) - 1;
    for (; r <= size; r += r & (-r)) tree_[r] += delta;
  }
  // Sum over ranks 1..r (0 when r < 1).
  int64_t prefix(int r) const {
    int64_t s = 0;
    for (; r > 0; r -= r & (-r)) s += tree_[r];
    return s;
  }

 private:
  std::vector<int64_t> tree_;
};

// Dense 1-based ranks of x (equal values share a rank); returns the number of
// distinct values in `n_distinct`.
inline std::vector<int> dense_ranks(const double* x, int n, int* n_distinct) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [x](int a, int b) { return x[a] < x[b]; });
  std::vector<int> rank(n);
  int r = 0;
  for (int k = 0; k < n; ++k) {
    if (k == 0 || x[order[k]] != x[order[k - 1]]) ++r;
    rank[order[k]] = r;
  }
  *n_distinct = r;
  return rank;
}

}  // namespace deepnomo

#endif

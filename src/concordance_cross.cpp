// Sum over comparable pairs of sign(y_i - y_j) * sign(z_i - z_j) for two scores
// y and z: the pair term of the covariance of two C-indices (Kang et al. 2015).
// A pair is comparable when the earlier member has an event (a censored time tied
// with an event time counts as later). This is a three-dimensional dominance count
// (time, y, z); it is done by divide and conquer over time with a Fenwick tree
// over z, O(n log^2 n) time and O(n) memory.
#include <Rcpp.h>
#include "fenwick.h"

using deepnomo::Fenwick;

namespace {

struct Subject {
  int key;  // 2 * time rank, + 1 when censored: j outlives event i iff key_j > key_i
  int y;
  int z;
  int event;
};

class CrossSum {
 public:
  CrossSum(std::vector<Subject>* s, int n_z) : s_(*s), buf_(s->size()), tree_(n_z) {}

  // s_[lo, hi) is sorted by key (decreasing); on return it is sorted by y.
  int64_t solve(int lo, int hi) {
    if (s_[lo].key == s_[hi - 1].key) return 0;  // one time group: no pairs in it
    const int b = split(lo, hi);
    int64_t total = solve(lo, b) + solve(b, hi);
    total += cross(lo, b, hi);
    std::merge(s_.begin() + lo, s_.begin() + b, s_.begin() + b, s_.begin() + hi, buf_.begin() + lo,
               [](const Subject& a, const Subject& c) { return a.y < c.y; });
    std::copy(buf_.begin() + lo, buf_.begin() + hi, s_.begin() + lo);
    return total;
  }

 private:
  std::vector<Subject>& s_;
  std::vector<Subject> buf_;
  Fenwick tree_;

  // Boundary between two key groups closest to the middle of [lo, hi).
  int split(int lo, int hi) const {
    const int mid = lo + (hi - lo) / 2;
    int left = mid, right = mid;
    while (left > lo && s_[left - 1].key == s_[left].key) --left;
    while (right < hi && s_[right - 1].key == s_[right].key) ++right;
    if (left == lo) return right;
    if (right == hi) return left;
    return (mid - left <= right - mid) ? left : right;
  }

  // Events in [b, hi) against everyone in [lo, b) (all of whom outlive them);
  // both halves are sorted by y.
  int64_t cross(int lo, int b, int hi) {
    const int n_right = hi - b;
    std::vector<int64_t> lt(n_right), lt_zlt(n_right), lt_zle(n_right);
    int p = lo;
    for (int k = b; k < hi; ++k) {
      const Subject& e = s_[k];
      while (p < b && s_[p].y < e.y) { tree_.add(s_[p].z, 1); ++p; }
      if (!e.event) continue;
      lt[k - b] = p - lo;
      lt_zlt[k - b] = tree_.prefix(e.z - 1);
      lt_zle[k - b] = tree_.prefix(e.z);
    }
    for (int q = lo; q < p; ++q) tree_.add(s_[q].z, -1);
    int64_t total = 0;
    p = b - 1;
    for (int k = hi - 1; k >= b; --k) {
      const Subject& e = s_[k];
      while (p >= lo && s_[p].y > e.y) { tree_.add(s_[p].z, 1); --p; }
      if (!e.event) continue;
      const int64_t gt = (b - 1) - p;
      const int64_t gt_zlt = tree_.prefix(e.z - 1);
      const int64_t gt_zle = tree_.prefix(e.z);
      const int r = k - b;
      // (y<, z<) + (y>, z>) - (y<, z>) - (y>, z<)
      total += lt_zlt[r] + (gt - gt_zle) - (lt[r] - lt_zle[r]) - gt_zlt;
    }
    for (int q = b - 1; q > p; --q) tree_.add(s_[q].z, -1);
    return total;
  }
};

}  // namespace

// [[Rcpp::export(name = ".concordance_cross_cpp")]]
double concordance_cross_cpp(Rcpp::NumericVector time, Rcpp::IntegerVector event,
                             Rcpp::NumericVector y, Rcpp::NumericVector z) {
  const int n = time.size();
  int n_time = 0, n_y = 0, n_z = 0;
  std::vector<int> trank = deepnomo::dense_ranks(time.begin(), n, &n_time);
  std::vector<int> yrank = deepnomo::dense_ranks(y.begin(), n, &n_y);
  std::vector<int> zrank = deepnomo::dense_ranks(z.begin(), n, &n_z);
  std::vector<Subject> s(n);
  for (int i = 0; i < n; ++i) {
    s[i] = Subject{2 * trank[i] + (event[i] == 1 ? 0 : 1), yrank[i], zrank[i], event[i] == 1};
  }
  std::sort(s.begin(), s.end(), [](const Subject& a, const Subject& b) {
    return a.key != b.key ? a.key > b.key : a.y < b.y;
  });
  CrossSum cs(&s, n_z);
  return static_cast<double>(cs.solve(0, n));
}

// Per-subject concordance counts in O(n log n): for every subject, the number of
// comparable pairs it belongs to that are concordant, discordant or tied in the
// score (risk orientation: the member with the earlier event has the higher score).
#include <Rcpp.h>
#include "fenwick.h"

using deepnomo::Fenwick;

// [[Rcpp::export(name = ".concordance_counts_cpp")]]
Rcpp::List concordance_counts_cpp(Rcpp::NumericVector time, Rcpp::IntegerVector event,
                                  Rcpp::NumericVector score, bool censored_tie_later) {
  const int n = time.size();
  int n_score = 0, n_time = 0;
  std::vector<int> srank = deepnomo::dense_ranks(score.begin(), n, &n_score);
  std::vector<int> trank = deepnomo::dense_ranks(time.begin(), n, &n_time);

  // Subjects grouped by time rank (counting sort), group g = time rank g + 1.
  std::vector<int> start(n_time + 1, 0);
  for (int i = 0; i < n; ++i) ++start[trank[i]];
  for (int g = 1; g <= n_time; ++g) start[g] += start[g - 1];
  std::vector<int> by_time(n);
  {
    std::vector<int> pos(start.begin(), start.end() - 1);
    for (int i = 0; i < n; ++i) by_time[pos[trank[i] - 1]++] = i;
  }

  Rcpp::NumericVector conc(n), disc(n), tied(n);

  // Role 1: i has the event, j outlives it. Sweep from the latest time down;
  // the tree holds the scores of everyone known to outlive the current time.
  {
    Fenwick tree(n_score);
    int64_t inserted = 0;
    for (int g = n_time - 1; g >= 0; --g) {
      const int lo = start[g], hi = start[g + 1];
      if (censored_tie_later) {
        for (int k = lo; k < hi; ++k) {
          const int i = by_time[k];
          if (event[i] == 0) { tree.add(srank[i], 1); ++inserted; }
        }
      }
      for (int k = lo; k < hi; ++k) {
        const int i = by_time[k];
        if (event[i] == 0) continue;
        const int64_t below = tree.prefix(srank[i] - 1);
        const int64_t upto = tree.prefix(srank[i]);
        conc[i] += static_cast<double>(below);
        tied[i] += static_cast<double>(upto - below);
        disc[i] += static_cast<double>(inserted - upto);
      }
      for (int k = lo; k < hi; ++k) {
        const int i = by_time[k];
        if (censored_tie_later && event[i] == 0) continue;
        tree.add(srank[i], 1);
        ++inserted;
      }
    }
  }

  // Role 2: j outlives an event of i. Sweep from the earliest time up; the tree
  // holds the scores of the events known to precede the current subject.
  {
    Fenwick tree(n_score);
    int64_t inserted = 0;
    auto query = [&](int j) {
      const int64_t below = tree.prefix(srank[j] - 1);
      const int64_t upto = tree.prefix(srank[j]);
      conc[j] += static_cast<double>(inserted - upto);
      tied[j] += static_cast<double>(upto - below);
      disc[j] += static_cast<double>(below);
    };
    for (int g = 0; g < n_time; ++g) {
      const int lo = start[g], hi = start[g + 1];
      for (int k = lo; k < hi; ++k) {
        const int j = by_time[k];
        if (!censored_tie_later || event[j] == 1) query(j);
      }
      for (int k = lo; k < hi; ++k) {
        const int j = by_time[k];
        if (event[j] == 1) { tree.add(srank[j], 1); ++inserted; }
      }
      if (censored_tie_later) {
        for (int k = lo; k < hi; ++k) {
          const int j = by_time[k];
          if (event[j] == 0) query(j);
        }
      }
    }
  }
  return Rcpp::List::create(Rcpp::Named("concordant") = conc, Rcpp::Named("discordant") = disc,
                            Rcpp::Named("tied") = tied);
}

// docs/longtail.md, "Long-tail baselines": each method in three lines.
// Built in CI by tests/consumer, against the installed package; every block
// below is quoted in the docs.
#include <drolt/drolt.hpp>

#include <iostream>
#include <vector>

int main() {
  torch::manual_seed(0);
  const int64_t N = 64, C = 4, D = 8;
  const std::vector<int64_t> counts{400, 100, 25, 6};
  auto features = torch::randn({N, D});
  auto targets = torch::randint(0, C, {N}, torch::kLong);
  torch::nn::Linear fc(D, C);
  auto logits = fc(features);
  const int64_t epoch = 170;

  // [focal]
  drolt::FocalLoss focal(drolt::FocalLossOptions().gamma(1.0));
  auto l_focal = focal(logits, targets);
  auto per_sample = drolt::functional::focal_loss(logits, targets, drolt::functional::FocalLossFuncOptions().gamma(2.0).reduction(torch::kNone));

  // [ldam-drw]
  drolt::LDAMLoss ldam(drolt::LDAMLossOptions(counts).max_margin(0.5).scale(30.0));
  ldam->options.weight(drolt::drw_class_weights(counts, epoch, /*start_epoch=*/160));
  auto l_ldam = ldam(logits, targets);

  // [la-loss]
  drolt::LogitAdjustedLoss la(drolt::LogitAdjustedLossOptions(counts).tau(1.0));
  auto l_la = la(logits, targets);  // tau = 1: Balanced Softmax
  auto pred = logits.argmax(1);     // predictions use the plain logits

  torch::optim::SGD opt(fc->parameters(), torch::optim::SGDOptions(0.01).weight_decay(5e-3));
  opt.zero_grad();
  l_la.backward();
  // [weight-balancing]
  drolt::MaxNorm max_norm(fc->weight, drolt::max_norm_threshold(fc->weight, 0.1));
  opt.step();
  max_norm.apply_();  // after every optimizer step

  torch::NoGradGuard no_grad;
  auto val_logits = fc(features);
  // [logit-adjust]
  double tau = drolt::choose_logit_adjust_tau(val_logits, targets, counts);
  auto adjusted = drolt::logit_adjust(val_logits, counts, tau);
  auto pred_la = adjusted.argmax(1);

  // [tau-norm]
  double t = drolt::choose_tau_normalize_tau(features, fc->weight, targets);
  auto w = drolt::tau_normalize(fc->weight, t);
  auto tau_norm_logits = torch::matmul(features, w.t());  // bias dropped

  // [lws]
  drolt::LWS lws(C);
  torch::optim::SGD lws_opt(lws->parameters(), torch::optim::SGDOptions(0.1));
  auto lws_logits = lws(val_logits);  // train the scales with class-balanced batches

  // [ncm]
  drolt::NearestClassMean ncm(C, D);
  ncm->fit(features, targets);  // or accumulate() over batches, then finalize()
  auto ncm_pred = ncm(features).argmax(1);

  std::cout << "focal " << l_focal.item<double>() << ", ldam " << l_ldam.item<double>() << ", la "
            << l_la.item<double>() << ", tau " << tau << " / " << t << ", NCM accuracy "
            << drolt::metrics::accuracy(ncm_pred, targets) << ", " << pred.size(0) + pred_la.size(0)
            << " predictions, " << per_sample.size(0) << " focal terms, " << tau_norm_logits.size(1) << " / " << lws_logits.size(1) << " classes\n";
  return 0;
}

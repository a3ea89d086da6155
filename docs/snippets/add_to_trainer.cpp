// docs/guide.md: adding DRO-LT to an existing LibTorch trainer.
// Built in CI by tests/consumer, against the installed package.
#include <drolt/drolt.hpp>

#include <iostream>

struct Net : torch::nn::Module {
  Net(int64_t in, int64_t dim, int64_t classes)
      : body(register_module("body", torch::nn::Linear(in, dim))),
        head(register_module("head", torch::nn::Linear(dim, classes))) {}
  torch::nn::Linear body, head;
};

int main() {
  torch::manual_seed(0);
  const int64_t N = 512, C = 4, D = 16;
  auto x = torch::randn({N, 8});
  auto y = torch::randint(0, C, {N}, torch::kLong);
  auto net = std::make_shared<Net>(8, D, C);

  // 1. The loss owns its radius policy; the bank holds one centroid per class.
  drolt::RobustCentroidLoss dro(drolt::RobustCentroidLossOptions(C).temperature(1.0).radius(
      drolt::RadiusPolicy::learned(0.5)));
  drolt::CentroidBank bank(C, D);

  // 2. Learned radii train with the feature extractor (docs/math.md, "Radius policies").
  auto params = net->parameters();
  for (auto& p : dro->parameters()) params.push_back(p);
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.05).momentum(0.9));
  const double lambda = 0.5;

  for (int epoch = 0; epoch < 3; ++epoch) {
    // 3. Once per epoch: centroids from a full pass over the training set.
    {
      torch::NoGradGuard no_grad;
      bank->clear_sums();
      for (int64_t s = 0; s < N; s += 128)
        bank->accumulate(torch::relu(net->body(x.slice(0, s, s + 128))), y.slice(0, s, s + 128));
      bank->finalize();
    }
    // 4. (1 - lambda) CE + lambda DRO-LT (Eq. 19).
    for (int64_t s = 0; s < N; s += 128) {
      auto xb = x.slice(0, s, s + 128), yb = y.slice(0, s, s + 128);
      auto feat = torch::relu(net->body(xb));
      auto ce = torch::nn::functional::cross_entropy(net->head(feat), yb);
      auto loss = (1 - lambda) * ce + lambda * dro(feat, yb, bank);
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    std::cout << "epoch " << epoch << " radii " << dro->radii() << "\n";
  }
  return 0;
}

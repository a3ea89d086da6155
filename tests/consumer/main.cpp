// An outside program: includes <drolt/loss.hpp> through find_package(drolt),
// calls the functional form and checks docs/math.md's value and gradient.
#include <drolt/loss.hpp>

#include <cmath>
#include <cstdio>

int main() {
  torch::manual_seed(0);
  const int64_t B = 12, C = 3, D = 4;
  auto z = torch::randn({B, D}, torch::kDouble).requires_grad_(true);
  auto y = torch::arange(B) % C;
  auto mu = torch::randn({C, D}, torch::kDouble);
  auto eps = torch::full({C}, 0.25, torch::kDouble);
  const double tau = 0.5;
  auto loss = drolt::functional::robust_centroid_loss(
      z, y, mu, eps, drolt::functional::RobustCentroidLossFuncOptions().temperature(tau));
  loss.backward();

  // docs/math.md's loss, written out directly.
  auto dist = torch::cdist(mu, z.detach());  // [C, B]
  auto pos = (torch::arange(C).unsqueeze(1) == y.unsqueeze(0)).to(torch::kDouble);
  auto s = (-dist - 2 * 0.25 * pos) / tau;
  auto l = -((s * pos).sum(1) / pos.sum(1) - torch::logsumexp(s, 1));
  const double expect = l.mean().item<double>();
  const double got = loss.item<double>();

  // Finite difference of one coordinate.
  const double h = 1e-6;
  auto zp = z.detach().clone();
  zp[0][0] += h;
  auto zm = z.detach().clone();
  zm[0][0] -= h;
  auto f = [&](const torch::Tensor& t) {
    return drolt::functional::robust_centroid_loss(
               t, y, mu, eps, drolt::functional::RobustCentroidLossFuncOptions().temperature(tau))
        .item<double>();
  };
  const double fd = (f(zp) - f(zm)) / (2 * h);
  const double an = z.grad()[0][0].item<double>();
  std::printf("consumer: loss %.12f (expected %.12f), dL/dz[0,0] %.8f (finite difference %.8f)\n",
              got, expect, an, fd);
  const bool ok = std::abs(got - expect) < 1e-12 && std::abs(an - fd) < 1e-6;
  std::printf("consumer: %s\n", ok ? "OK" : "MISMATCH");
  return ok ? 0 : 1;
}

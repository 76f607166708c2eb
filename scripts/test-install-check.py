# SPDX-License-Identifier: MIT
"""Checks an installed bn1d (scripts/test-install.sh runs it outside the checkout).

    python3 test-install-check.py SITE_DIR VERSION PACKAGE_FILES

bn1d and bn1d.torch must import from SITE_DIR/bn1d, with every file of python/bn1d (PACKAGE_FILES,
one name a line) plus _version.py and the extension, and the given version in bn1d, _version.py
and the extension; then one training step of bn1d.torch.BatchNorm1d is compared with
torch.nn.BatchNorm1d's.
"""

import os
import sys

import torch

import bn1d
import bn1d._version
import bn1d.torch

site_dir, version, package_files = sys.argv[1], sys.argv[2], sys.argv[3].split()
package_dir = os.path.dirname(os.path.realpath(bn1d.__file__))
expected_dir = os.path.join(os.path.realpath(site_dir), "bn1d")
assert package_dir == expected_dir, f"bn1d imported from {package_dir}, not {expected_dir}"
assert os.path.dirname(os.path.realpath(bn1d._bn1d.__file__)) == package_dir, bn1d._bn1d.__file__
missing = [name for name in package_files + ["_version.py"]
           if not os.path.isfile(os.path.join(package_dir, name))]
assert not missing, f"not installed: {missing}"
versions = {"bn1d.__version__": bn1d.__version__,
            "bn1d._version.__version__": bn1d._version.__version__,
            "bn1d._bn1d.__version__": bn1d._bn1d.__version__}
assert all(value == version for value in versions.values()), f"expected {version}: {versions}"
print(f"bn1d.__version__, bn1d._version.__version__, bn1d._bn1d.__version__ == {version}")

# One training step (forward, backward, running statistics), as torch computes it. Tolerances: the
# results are O(1) and each is a sum over 4 * 9 = 36 values per channel plus a division by the
# standard deviation; two correct implementations differ by rounding only, a few dozen units of
# roundoff at most (float32: 6e-8, float64: 1.1e-16), far under 1e-5 and 1e-12.
for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
    generator = torch.Generator().manual_seed(22)
    x = torch.randn(4, 5, 9, generator=generator, dtype=dtype) * 3 + 1
    grad_output = torch.randn(4, 5, 9, generator=generator, dtype=dtype)
    ref = torch.nn.BatchNorm1d(5, momentum=0.2).to(dtype)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(5, generator=generator, dtype=dtype) + 0.5)
        ref.bias.copy_(torch.randn(5, generator=generator, dtype=dtype))
    ours = bn1d.torch.BatchNorm1d(5, momentum=0.2).to(dtype)
    ours.load_state_dict(ref.state_dict())
    results = []
    for module in (ref, ours):
        x_leaf = x.clone().requires_grad_()
        y = module(x_leaf)
        y.backward(grad_output)
        results.append([y, x_leaf.grad, module.weight.grad, module.bias.grad,
                        module.running_mean, module.running_var])
    for name, expected, actual in zip(("output", "grad_input", "grad_weight", "grad_bias",
                                       "running_mean", "running_var"), *results):
        torch.testing.assert_close(actual.detach(), expected.detach(), rtol=tol, atol=tol,
                                   msg=lambda text, name=name: f"{dtype} {name}: {text}")
    print(f"{dtype}: output, gradients and running statistics match torch.nn.BatchNorm1d")
print(f"bn1d {version} from {package_dir}: ok")

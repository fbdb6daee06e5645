"""RoFormerV2-small with the reference recipe; see `common.v2_recipe`."""

from pretrain.configs.common import v2_recipe


def get_config():
  return v2_recipe("roformer_v2_small")

"""The suite's own settings (pytest.ini): a warning raised by our code fails the test that
raised it; third-party warnings do not."""
import warnings

import pytest


@pytest.mark.parametrize('module', ['evit_mm.models.efficientvit', 'evit_mm.deployment.deploy',
                                    'test_deployment', 'deploy_helpers', 'conftest'])
def test_a_warning_from_our_code_is_an_error(module):
    with pytest.raises(UserWarning, match='raised by our code'):
        warnings.warn_explicit('raised by our code', UserWarning, 'ours.py', 1, module=module)


def test_a_third_party_warning_is_not_an_error():
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit('raised by mmdet', UserWarning, 'theirs.py', 1,
                               module='mmdet.models.something')
    assert [str(w.message) for w in caught] == ['raised by mmdet']

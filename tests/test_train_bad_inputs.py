"""Bad training input gets a clear error before any training starts, and leaves no run behind."""
import numpy as np, pandas as pd, pytest
from mlinfra_nb.lake import Lake
from mlinfra_nb.train import Tracker, tabular_model, train
from mlinfra_nb.workspace import InvalidInput, Workspace, import_tensorflow

@pytest.fixture(scope='module')
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('bad')
    rng = np.random.default_rng(0)
    df = pd.DataFrame({'amount': rng.gamma(2, 30, 500).astype('float32'), 'category': rng.choice(['a', 'b', 'c'], 500),
                       'count': rng.integers(0, 9, 500), 'y': rng.integers(0, 2, 500)})
    repo = Lake(tmp/'lake').create_repository('bad-inputs')
    repo.write_table('main', 'ok', df)
    repo.write_table('main', 'nan', df.assign(amount=np.where(np.arange(500) % 100 == 0, np.nan, df.amount)))
    repo.write_table('main', 'null_label', df.assign(y=pd.array(np.where(np.arange(500) < 2, None, df.y), dtype='Int64')))
    repo.write_table('main', 'empty', df[:0])
    repo.write_table('main', 'lists', df.assign(tags=[[1, 2]] * 500))
    repo.commit('main', 'data with faults')
    return repo, Workspace(tmp/'ws', env={})

FEATS = ['amount', 'category', 'count']

def fit(env, path, model=tabular_model, features=FEATS, label='y'):
    repo, ws = env
    return train(model, (repo, 'main', path), features=features, label=label, epochs=1, workspace=ws, progress=False)

def keras_model(inputs:dict):
    keras = import_tensorflow().keras
    ins = {n: keras.Input((), dtype=d, name=n) for n, d in inputs.items()}
    x = keras.layers.Concatenate()([keras.layers.Reshape((1,))(keras.ops.cast(v, 'float32')) for v in ins.values()])
    m = keras.Model(ins, keras.layers.Dense(1, activation='sigmoid')(x)); m.compile('adam', 'binary_crossentropy')
    return m

@pytest.mark.parametrize('kw, message', [
    (dict(label='fraud'), "column(s) ['fraud'] are not in the data"),
    (dict(features=['amount', 'merchant']), "column(s) ['merchant'] are not in the data"),
    (dict(features=[]), "say which columns to use"),
    (dict(label=None), "say which columns to use"),
])
def test_missing_columns(env, kw, message):
    with pytest.raises(InvalidInput, match=message.replace('[', r'\[').replace(']', r'\]').replace('(', r'\(').replace(')', r'\)')): fit(env, 'ok', **kw)

def test_empty(env):
    with pytest.raises(InvalidInput, match="the dataset is empty"): fit(env, 'empty')

def test_nan_in_features(env):
    with pytest.raises(InvalidInput, match=r"missing values \(NULL or NaN\) in amount \(5 rows\)"): fit(env, 'nan')

def test_null_label(env):
    with pytest.raises(InvalidInput, match=r"missing values \(NULL or NaN\) in y \(2 rows\)"): fit(env, 'null_label')

def test_unsupported_column_type(env):
    with pytest.raises(InvalidInput, match="column 'tags' is list"): fit(env, 'lists', features=['amount', 'tags'])

def test_string_feature_without_lookup(env):
    m = keras_model({'amount': 'float32', 'category': 'float32', 'count': 'int64'})
    with pytest.raises(InvalidInput, match="input 'category' of the model is float32 but the data has string; add a lookup"): fit(env, 'ok', model=m)

def test_model_inputs_do_not_match(env):
    with pytest.raises(InvalidInput, match=r"expects input\(s\) \['merchant'\] that the data does not have"):
        fit(env, 'ok', model=keras_model({'amount': 'float32', 'merchant': 'string', 'count': 'int64', 'category': 'string'}))
    with pytest.raises(InvalidInput, match=r"the data has feature\(s\) \['count'\] the model does not take"):
        fit(env, 'ok', model=keras_model({'amount': 'float32', 'category': 'string'}))

def test_nothing_left_behind(env):
    repo, ws = env
    for path, kw in (('empty', {}), ('nan', {}), ('ok', dict(label='fraud'))):
        with pytest.raises(InvalidInput): fit(env, path, **kw)
    assert len(Tracker(ws).runs()) == 0
    assert not (ws.home/'runs').exists() or not list((ws.home/'runs').iterdir())

"""TensorFlow's start-up chatter never reaches a notebook cell on a machine without a GPU; a real error line still does.

The notebooks run in a real Jupyter kernel (nbclient), which shows what the kernel process writes to its file
descriptor 2 as `stderr` output under the cell: where the `cuInit ... (303)` box used to be. (ipykernel does not watch
fd 2 when it sees PYTEST_CURRENT_TEST, so the kernel is started without it.)
"""
import os, re, subprocess, sys
import nbformat, pytest
from nbclient import NotebookClient
from mlinfra_nb.workspace import gpu_present, quiet_stderr, tf_chatter

CHATTER = ('oneDNN', 'absl::InitializeLog', 'cpu_feature_guard', 'INFO:tensorflow')   # on any machine
NO_GPU = ('cuInit', 'Could not find cuda drivers')                                    # held back only where there is no GPU

def chatter_in(text): return [w for w in CHATTER + (() if gpu_present() else NO_GPU) if w in text]

def execute(tmp_path, *cells):
    "The outputs of each cell of a notebook of `cells`, run in a fresh python3 kernel with cwd `tmp_path`."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {k: v for k, v in os.environ.items() if k not in ('PYTEST_CURRENT_TEST', 'TF_CPP_MIN_LOG_LEVEL')}   # as a user's JupyterLab has it
    NotebookClient(nb, kernel_name='python3', timeout=300, resources={'metadata': {'path': str(tmp_path)}}).execute(env=env)
    return [c.outputs for c in nb.cells]

def stderr_of(outputs):
    return ''.join(o.get('text', '') for cell in outputs for o in cell if o.output_type == 'stream' and o.name == 'stderr')

def streams_of(outputs):
    "All a notebook printed: TensorFlow's Python logger writes 'INFO:tensorflow:...' to stdout in a notebook."
    return ''.join(o.get('text', '') for cell in outputs for o in cell if o.output_type == 'stream')

def test_training_notebook_shows_no_chatter(tmp_path):
    outs = execute(tmp_path,
        "from mlinfra_nb.workspace import import_tensorflow\ntf = import_tensorflow()",
        "import numpy as np\nx = np.random.default_rng(0).normal(size=(256, 3)).astype('float32'); y = (x.sum(1) > 0).astype('float32')\n"
        "m = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1, activation='sigmoid')])\n"
        "m.compile('adam', 'binary_crossentropy'); h = m.fit(x, y, epochs=2, verbose=0)\nprint(len(h.history['loss']))",
        "class Scale(tf.Module):\n    def __init__(self): self.w = tf.Variable(2.0)\n"
        "    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])\n    def __call__(self, x): return x * self.w\n"
        "import os\ntf.saved_model.save(Scale(), 'scale')\nprint(sorted(os.listdir('scale')))")   # TensorFlow logs 'Assets written to: scale/assets'
    assert [o.text for o in outs[1] if o.output_type == 'stream' and o.name == 'stdout'] == ['2\n']      # it trained
    assert 'saved_model.pb' in ''.join(o.text for o in outs[2] if o.output_type == 'stream')            # it saved
    err = streams_of(outs)
    assert not chatter_in(err), err

def test_tensorflow_imported_by_a_module_is_quiet_too(tmp_path):
    outs = execute(tmp_path,
        "import mlinfra_nb.serve.codec",                  # imports tensorflow.core.* at module level, not through import_tensorflow
        "import tensorflow as tf\nprint(float(tf.reduce_sum(tf.constant([1.0, 2.0]) + 1)))")
    assert [o.text for o in outs[1] if o.output_type == 'stream' and o.name == 'stdout'] == ['5.0\n']
    err = streams_of(outs)
    assert not chatter_in(err), err

def test_a_real_error_line_still_reaches_the_cell(tmp_path):
    outs = execute(tmp_path,
        "import os\nfrom mlinfra_nb.workspace import quiet_stderr\nwith quiet_stderr():\n"
        "    os.write(2, b'E0000 00:00:1796428044.436968    3839 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
        "    os.write(2, b'E0000 00:00:1796428044.5 3839 op_kernel.cc:1844] OP_REQUIRES failed: PERMISSION_DENIED: model.ckpt\\n')\n"
        "import time; time.sleep(0.5)")                     # the kernel forwards fd 2 from a thread; give it a moment
    err = stderr_of(outs)
    assert 'OP_REQUIRES failed: PERMISSION_DENIED: model.ckpt' in err, err
    assert ('cuInit' in err) == gpu_present(), err

def test_filter_keeps_real_lines():
    no_gpu = {"E0000 00:00:1796428044.436968    3839 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)": True,
              "I0000 00:00:1796428041.178455    3839 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.": True,
              "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR": True,
              "E0000 00:00:1796428044.4 3839 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_NO_DEVICE (100)": False,
              "E0000 00:00:1796428044.4 3839 cuda_driver.cc:1200] failed to allocate 2.0G from device: CUDA_ERROR_OUT_OF_MEMORY": False,
              "ValueError: Input 0 of layer dense is incompatible": False}
    assert {l: tf_chatter(l, gpu=False) for l in no_gpu} == no_gpu
    assert [l for l in no_gpu if tf_chatter(l, gpu=True)] == ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"]

def test_quiet_stderr_filters_fd_2_of_a_process(tmp_path):
    code = ("import os\nfrom mlinfra_nb.workspace import quiet_stderr\n"
            "with quiet_stderr(lambda l: l.startswith('noise')):\n"
            "    os.write(2, b'noise one\\nreal one\\n'); os.system('echo noise from a child >&2; echo real from a child >&2')\n"
            "os.write(2, b'noise after\\n')\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.splitlines() == ['real one', 'real from a child', 'noise after'], r.stderr

GPU_NEWS = [   # lines TensorFlow writes on a GPU machine (device found, libraries or memory missing, a broken driver): never held back there
    "I0000 00:00:1796428041.2 3839 gpu_device.cc:2022] Created device /job:localhost/replica:0/task:0/device:GPU:0 with 139264 MB memory:  -> device: 0, name: NVIDIA H200, pci bus id: 0000:00:05.0, compute capability: 9.0",
    "W0000 00:00:1796428041.3 3839 gpu_device.cc:2344] Cannot dlopen some GPU libraries. Please make sure the missing libraries mentioned above are installed properly if you would like to use GPU.",
    "E0000 00:00:1796428041.4 3839 cuda_dnn.cc:522] Loaded runtime CuDNN library: 8.6.0 but source was compiled with: 8.9.4.  CuDNN library needs to have matching major version and equal or higher minor version.",
    "E0000 00:00:1796428041.5 3839 cuda_driver.cc:1200] failed to allocate 2.00G (2147483648 bytes) from device: CUDA_ERROR_OUT_OF_MEMORY: out of memory",
    "E0000 00:00:1796428044.436968    3839 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796428041.178455    3839 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
]

def test_on_a_gpu_machine_real_gpu_messages_pass_through(tmp_path):
    """The GPU side of the filter, checked on a CPU machine: a process that sees a GPU (`gpu_present` answering True, as `/dev/nvidia*` makes it)
    writes TensorFlow's real GPU lines and its every-start chatter to fd 2 inside `quiet_stderr()`; the GPU lines all come out, in order, the chatter not.
    (Not run on a real GPU: no GPU was lent to the machine that wrote this test.)"""
    chatter = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
               "I0000 00:00:1796428040.9 3839 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders."]
    lines = [chatter[0], GPU_NEWS[0], chatter[1], *GPU_NEWS[1:]]
    (tmp_path/'lines.txt').write_text('\n'.join(lines) + '\n')
    code = ("import os, sys\nimport mlinfra_nb.workspace as w\nw.gpu_present = lambda: True\n"
            "with w.quiet_stderr():\n    os.write(2, open(sys.argv[1], 'rb').read())\n")
    r = subprocess.run([sys.executable, '-c', code, str(tmp_path/'lines.txt')], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.splitlines() == GPU_NEWS, r.stderr
    assert [l for l in GPU_NEWS if tf_chatter(l, gpu=True)] == []

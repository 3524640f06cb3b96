{
  # AES-256-GCM into caller-provided buffers, using the OpenSSL already linked into the node binary.
  # No 'libraries': the EVP_* symbols stay undefined in the .node and are resolved from the node
  # process when it is loaded (node exports its OpenSSL; the headers come with node's own headers).
  'targets': [
    {
      'target_name': 'rsvault_native',
      'sources': ['rsvault_native.c'],
      'defines': ['NAPI_VERSION=8'],
      'cflags': ['-O2', '-std=c11', '-fvisibility=hidden'],
      'xcode_settings': {
        'OTHER_CFLAGS': ['-O2', '-std=c11', '-fvisibility=hidden'],
      },
    },
  ],
}

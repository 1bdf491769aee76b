using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace SpliceTransport.Transport;

/// <summary>
/// The pool used only when the host registers no <c>IMemoryPoolFactory&lt;byte&gt;</c> (Kestrel registers
/// one). Blocks live on the pinned object heap, so handing them to recv and sendmsg needs no pinning handle.
/// </summary>
internal sealed class PinnedMemoryPool : MemoryPool<byte>
{
    /// <summary>One page: Kestrel's block size, and what most receives fill.</summary>
    private const int BlockSize = 4096;

    private readonly ConcurrentQueue<byte[]> _blocks = new();

    public override int MaxBufferSize => BlockSize;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > BlockSize)
        {
            throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, $"Blocks of this pool hold {BlockSize} bytes.");
        }
        byte[] block = _blocks.TryDequeue(out byte[]? pooled) ? pooled : GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
        return new Block(this, block);
    }

    protected override void Dispose(bool disposing) => _blocks.Clear();

    private sealed class Block(PinnedMemoryPool pool, byte[] array) : IMemoryOwner<byte>
    {
        private byte[]? _array = array;

        public Memory<byte> Memory => MemoryMarshal.CreateFromPinnedArray(_array ?? throw new ObjectDisposedException(nameof(Block)), 0, BlockSize);

        public void Dispose()
        {
            byte[]? array = Interlocked.Exchange(ref _array, null);
            if (array is not null)
            {
                pool._blocks.Enqueue(array);
            }
        }
    }
}

from .embedding import embed_2d, plot_embedding

__all__ = ['embed_2d', 'plot_embedding']

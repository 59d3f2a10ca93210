# Monoscope's web app for a lab server (see docker-compose.yml and the README's "Deployment").
# Build stage: the wheel, exactly what `pip install .` would install (templates, static, migrations included).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY app app
COPY sae sae
COPY templates templates
COPY static static
COPY migrations migrations
RUN pip install --no-cache-dir hatchling && pip wheel --no-deps --no-build-isolation -w /dist .

# Run stage: the wheel and its dependencies (torch's CPU build), a non-root user, migrations on start.
FROM python:3.11-slim
COPY --from=wheel /dist /dist
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu /dist/*.whl \
    && rm -rf /dist \
    && useradd --create-home --uid 1000 monoscope
USER monoscope
WORKDIR /home/monoscope
ENV MONOSCOPE_HOST=0.0.0.0 \
    MONOSCOPE_PORT=8000
EXPOSE 8000
# The schema first (Alembic, idempotent), then the server; `monoscope serve` would upgrade too, but a failed
# migration should stop the container with its own message.
CMD ["sh", "-c", "monoscope db upgrade && exec monoscope serve"]

package Gateway::Client;

# The HTTP client of the gateway: core modules only (HTTP::Tiny, JSON::PP), plus
# JSON::Validator when client-side validation is asked for. Every verb returns a response
# hashref (see RESPONSES in the POD); HTTP failures are data, misuse croaks.

use strict;
use warnings;

use Carp qw(croak);
use HTTP::Tiny;
use JSON::PP ();
use Scalar::Util qw(blessed);
use Time::HiRes ();

use Gateway::Client::Details ();
use Gateway::Client::SSE;

our $VERSION = '0.01';

my %TERMINAL_STATUS = map { $_ => 1 } qw(succeeded failed cancelled expired);
my %TERMINAL_EVENT  = map { $_ => 1 } qw(result error cancelled expired);

# The gateway caps a single wait (its --max-wait, 60 s by default); longer waits are
# made of several polls of at most this length.
my $POLL_SECONDS = 30;

# How much longer than a server-side wait the socket may stay silent.
my $WAIT_SLACK_SECONDS = 10;

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub new {
    my ($class, %args) = @_;
    my $base_url = delete $args{base_url} // croak 'base_url is required';
    croak "base_url must be an http(s) URL, not '$base_url'" unless $base_url =~ m{\Ahttps?://}i;
    $base_url =~ s{/+\z}{};

    my $self = bless {
        base_url => $base_url,
        validate => delete $args{validate} // 0,
        timeout  => delete $args{timeout} // 60,
        headers  => delete $args{headers} // {},
        validators => {},    # op => JSON::Validator schema of its request
        contracts  => {},    # op => contract
        message_validators => {},    # topic => JSON::Validator schema of its messages
        topic_contracts    => {},    # topic => the contract that applies to it
        job_tokens => {},    # job id => the job token to read it with (?access_token=)
    }, $class;
    my $http = delete $args{http};
    croak "unknown arguments: @{[ sort keys %args ]}" if %args;
    croak 'timeout must be a positive number' unless _is_number($self->{timeout}) && $self->{timeout} > 0;
    croak 'headers must be a hash reference' unless ref $self->{headers} eq 'HASH';

    $self->{http} = $http // HTTP::Tiny->new(
        agent   => "Gateway::Client/$VERSION ",
        timeout => $self->{timeout},
    );
    return $self;
}

sub base_url { $_[0]{base_url} }

# --- verbs --------------------------------------------------------------------------

sub ops {
    my ($self) = @_;
    my $response = $self->_request(GET => '/v1/ops');
    return _with($response, ops => $response->{body} && $response->{body}{ops});
}

sub contract {
    my ($self, $op) = @_;
    _check_name(op => $op);
    return $self->_contract($self->{contracts}, $op, '/v1/ops/' . _escape($op));
}

sub submit {
    my ($self, $op, $body, %opt) = @_;
    _check_name(op => $op);
    croak 'submit needs a request body (any JSON value)' if @_ < 3;
    my %known = map { $_ => 1 } qw(wait idempotency_key deadline_seconds);
    _check_options(\%opt, \%known);

    if ($self->{validate}) {
        my $refusal = $self->validate_request($op, $body);
        return $refusal if $refusal;
    }

    my %headers = ('Content-Type' => 'application/json');
    $headers{'Idempotency-Key'}    = $opt{idempotency_key}  if defined $opt{idempotency_key};
    $headers{'X-Deadline-Seconds'} = $opt{deadline_seconds} if defined $opt{deadline_seconds};
    my $response = $self->_request(
        POST => '/v1/ops/' . _escape($op),
        query   => { wait => $opt{wait} },
        headers => \%headers,
        content => $JSON->encode($body),
    );
    my $result = _with($response, job => $self->_remember($response->{body}));
    $result->{location} = $response->{headers}{location} if $response->{ok};
    return $result;
}

sub job {
    my ($self, $id, %opt) = @_;
    _check_name(id => $id);
    _check_options(\%opt, { wait => 1, after => 1, job_token => 1 });
    $self->{job_tokens}{$id} = $opt{job_token} if defined $opt{job_token};
    my $response = $self->_request(
        GET => '/v1/jobs/' . _escape($id),
        query => { wait => $opt{wait}, after => $opt{after}, access_token => $self->{job_tokens}{$id} },
    );
    return _with($response, job => $self->_remember($response->{body}));
}

sub cancel {
    my ($self, $id) = @_;
    _check_name(id => $id);
    my $response = $self->_request(DELETE => '/v1/jobs/' . _escape($id));
    return _with($response, job => $response->{body});
}

# Submit, then long-poll the job until it ends (or `wait` seconds pass).
sub call {
    my ($self, $op, $body, %opt) = @_;
    _check_name(op => $op);
    croak 'call needs a request body (any JSON value)' if @_ < 3;
    _check_options(\%opt, { map { $_ => 1 } qw(wait idempotency_key deadline_seconds on_progress) });
    my $on_progress = delete $opt{on_progress};
    croak 'on_progress must be a code reference' if defined $on_progress && ref $on_progress ne 'CODE';
    my $budget = delete $opt{wait} // 300;
    croak 'wait must be a non-negative number' unless _is_number($budget) && $budget >= 0;
    my $give_up_at = Time::HiRes::time() + $budget;

    my $submitted = $self->submit($op, $body, %opt, wait => _poll_length($give_up_at));
    return $submitted unless $submitted->{ok};

    my $job = $submitted->{job};
    my $last_progress = '';
    while (1) {
        if ($on_progress && defined $job->{progress}) {
            # The job carries its latest progress; report it once per change.
            my $progress = $JSON->encode($job->{progress});
            $on_progress->($job->{progress}, $job) if $progress ne $last_progress;
            $last_progress = $progress;
        }
        return _outcome($job) if $TERMINAL_STATUS{ $job->{status} };

        my $poll = _poll_length($give_up_at);
        return {
            ok     => 0,
            status => 200,
            job    => $job,
            error  => { code => 'timeout', message => "job $job->{id} did not end within $budget s" },
        } if $poll <= 0;

        my $answer = $self->job($job->{id}, wait => $poll, after => $job->{seq});
        return { %$answer, job => $job } unless $answer->{ok};
        $job = $answer->{job};
    }
}

# Follow the job's events as SSE, calling on_event with each {seq, type, data}; resumes
# with Last-Event-ID when the connection drops before the terminal event.
sub events {
    my ($self, $id, %opt) = @_;
    _check_name(id => $id);
    _check_options(\%opt, { map { $_ => 1 } qw(on_event after max_retries job_token) });
    $self->{job_tokens}{$id} = $opt{job_token} if defined $opt{job_token};
    my $on_event = $opt{on_event};
    croak 'on_event must be a code reference' if defined $on_event && ref $on_event ne 'CODE';
    my $after = $opt{after} // 0;
    croak 'after must be a non-negative integer' unless $after =~ /\A[0-9]+\z/;

    my @delivered;
    my $followed = $self->_follow(
        '/v1/jobs/' . _escape($id) . '/events',
        what         => "the event stream of job $id",
        after        => $after,
        access_token => $self->{job_tokens}{$id},
        max_retries  => $opt{max_retries} // 5,
        on_frame     => sub {
            my ($seq, $frame) = @_;
            my $event = { seq => $seq, type => $frame->{event}, data => _decode_text($frame->{data}) };
            push @delivered, $event;
            $on_event->($event) if $on_event;
            return $TERMINAL_EVENT{ $event->{type} };    # the end of the job's stream
        },
    );
    delete $followed->{until};
    return { %$followed, events => \@delivered };
}

# --- topics -------------------------------------------------------------------------

sub topics {
    my ($self) = @_;
    my $response = $self->_request(GET => '/v1/topics');
    return _with($response, topics => $response->{body} && $response->{body}{topics});
}

sub topic_contract {
    my ($self, $topic) = @_;
    _check_name(topic => $topic);
    return $self->_contract($self->{topic_contracts}, $topic, '/v1/topics/' . _escape($topic));
}

sub publish {
    my ($self, $topic, $message, %opt) = @_;
    _check_name(topic => $topic);
    croak 'publish needs a message (any JSON value)' if @_ < 3;
    _check_options(\%opt, { validate => 1 });

    if ($opt{validate} // $self->{validate}) {
        my $refusal = $self->validate_message($topic, $message);
        return $refusal if $refusal;
    }
    my $response = $self->_request(
        POST => '/v1/topics/' . _escape($topic),
        headers => { 'Content-Type' => 'application/json' },
        content => $JSON->encode($message),
    );
    my $body = $response->{body} // {};
    return _with($response, topic => $body->{topic}, message_id => $body->{message_id});
}

# Follow the topic's messages as SSE, calling on_message with each {seq, topic, data},
# until `max` messages or the time `until`; resumes with Last-Event-ID like events().
sub subscribe {
    my ($self, $topic, %opt) = @_;
    _check_name(topic => $topic);
    _check_options(\%opt, { map { $_ => 1 } qw(on_message after max until max_retries token) });
    my $on_message = $opt{on_message};
    croak 'on_message must be a code reference' if defined $on_message && ref $on_message ne 'CODE';
    croak 'after must be a non-negative integer' if defined $opt{after} && $opt{after} !~ /\A[0-9]+\z/;
    croak 'max must be a positive integer' if defined $opt{max} && $opt{max} !~ /\A[1-9][0-9]*\z/;
    croak 'until must be a time (epoch seconds)' if defined $opt{until} && !_is_number($opt{until});
    croak 'subscribe without on_message needs max or until (it would never return)'
        unless $on_message || defined $opt{max} || defined $opt{until};

    my $path = '/v1/topics/' . _escape($topic) . '/events';
    # "From now on" as a seq (the long-poll's `next`), so that a connection dropped before
    # the first message resumes from there, not from a later "now". If the gateway cannot
    # say, the stream starts from now by itself (and tells any error).
    my $after = $opt{after};
    unless (defined $after) {
        my $now = $self->_request(GET => $path, query => { wait => 0, access_token => $opt{token} });
        my $next = $now->{ok} && ref $now->{body} eq 'HASH' ? $now->{body}{next} : undef;
        $after = $next if defined $next && $next =~ /\A[0-9]+\z/;
    }
    my (@kept, $count);
    $count = 0;
    my $followed = $self->_follow(
        $path,
        what         => "the message stream of topic $topic",
        after        => $after,
        access_token => $opt{token},
        max_retries  => $opt{max_retries} // 5,
        until        => $opt{until},
        idle_is_fine => 1,
        on_frame     => sub {
            my ($seq, $frame) = @_;
            my $message = { seq => $seq, topic => $topic, data => _decode_text($frame->{data}) };
            $count++;
            push @kept, $message unless $on_message;
            $on_message->($message) if $on_message;
            return defined $opt{max} && $count >= $opt{max};
        },
    );
    my $until = delete $followed->{until};
    $followed->{stopped} = $until ? 'until' : 'max' if $followed->{ok};
    return { %$followed, count => $count, ($on_message ? () : (messages => \@kept)) };
}

sub topic_token {
    my ($self, $topic) = @_;
    _check_name(topic => $topic);
    my $response = $self->_request(POST => '/v1/topics/' . _escape($topic) . '/tokens', content => '');
    my $body = $response->{body} // {};
    return _with($response, map { $_ => $body->{$_} } qw(token topic expires_at events));
}

# --- local validation ---------------------------------------------------------------

# Check a request against the operation's contract without sending it: undef when it is
# valid, else a response shaped like the gateway's 422.
sub validate_request {
    my ($self, $op, $body) = @_;
    _check_name(op => $op);
    return $self->_validate(
        $body,
        contract   => sub { $self->contract($op) },
        validator  => \$self->{validators}{$op},
        definition => 'request',
        what       => "request does not match the contract of $op",
    );
}

# The same for a message against the topic's contract.
sub validate_message {
    my ($self, $topic, $message) = @_;
    _check_name(topic => $topic);
    return $self->_validate(
        $message,
        contract   => sub { $self->topic_contract($topic) },
        validator  => \$self->{message_validators}{$topic},
        definition => 'message',
        what       => "message does not match the contract of topic $topic",
    );
}

# --- internals ----------------------------------------------------------------------

# Keep the job token of a job resource for the job's later reads, unless this client has
# an Authorization header of its own (which opens them already).
sub _remember {
    my ($self, $job) = @_;
    my $bearer = grep { lc $_ eq 'authorization' } keys %{ $self->{headers} };
    $self->{job_tokens}{ $job->{id} } = $job->{job_token}
        if !$bearer && ref $job eq 'HASH' && defined $job->{id} && defined $job->{job_token};
    return $job;
}

# A contract from $cache, else fetched from $path (and cached if it came).
sub _contract {
    my ($self, $cache, $name, $path) = @_;
    return { ok => 1, status => 200, contract => $cache->{$name} } if $cache->{$name};
    my $response = $self->_request(GET => $path);
    $cache->{$name} = $response->{body} if $response->{ok};
    return _with($response, contract => $response->{body});
}

# $data against definitions.<definition> of a contract (fetched and compiled once).
sub _validate {
    my ($self, $data, %arg) = @_;
    my $fetched = $arg{contract}->();    # cached by the caller's contract verb
    return { %$fetched, local => 1 } unless $fetched->{ok};
    my $contract = $fetched->{contract};
    my $validator = ${ $arg{validator} } //= _definition_validator($contract, $arg{definition});
    # What the gateway will see: the data as JSON, so each value has its JSON type.
    # (JSON::Validator stringifies the numbers it checks: the walk below gets a copy.)
    my $text = $JSON->encode($data);
    my @errors = $validator->validate($JSON->decode($text));
    return unless @errors;
    # JSON::Validator decides; the details name the places as the gateway does.
    my @details = eval {
        Gateway::Client::Details::validation_details(
            $contract->{definitions}{ $arg{definition} }, $JSON->decode($text), $contract);
    };
    @details = map { { path => $_->path eq '/' ? '' : $_->path, message => $_->message } } @errors
        unless @details;    # a schema the walk cannot follow (a $ref to another document)
    return {
        ok     => 0,
        status => 422,
        local  => 1,
        error  => {
            code    => 'invalid_request',
            message => "$arg{what}: $details[0]{message}",
            details => \@details,
        },
    };
}

sub _definition_validator {
    my ($contract, $definition) = @_;
    require JSON::Validator::Schema::Draft7;
    # A schema that only points at the definition, so that refs inside it still resolve
    # against the contract's definitions.
    return JSON::Validator::Schema::Draft7->new({
        '$schema'   => 'http://json-schema.org/draft-07/schema#',
        definitions => $contract->{definitions},
        '$ref'      => "#/definitions/$definition",
    });
}

# One HTTP request; returns { ok, status, headers, body (decoded JSON), error }.
sub _request {
    my ($self, $method, $path, %arg) = @_;
    my $url = $self->{base_url} . $path . _query($arg{query});
    my %options = (headers => { Accept => 'application/json', %{ $self->{headers} }, %{ $arg{headers} // {} } });
    $options{content} = $arg{content} if defined $arg{content};

    my $wait = $arg{query} && $arg{query}{wait};
    my $raw = $self->_with_timeout($wait, sub { $self->{http}->request($method, $url, \%options) });
    return _parse($raw);
}

# Follow an SSE stream (a job's events, a topic's messages) from seq `after` (undef: from
# what comes next), calling on_frame($seq, $frame) with each frame past the last seq
# delivered, so none comes twice; on_frame returns true when the stream is over for the
# caller. A dropped connection, a stream that ends (or a 503) is resumed with
# Last-Event-ID. Returns { ok, status, last_seq, error? }, and `until` => 1 when it stopped
# because the time `until` (epoch seconds) came. It gives up after max_retries attempts in
# a row that delivered nothing (`stream_interrupted`), or, with idle_is_fine, that could
# not even open the stream: a stream open but quiet is normal then (a topic).
sub _follow {
    my ($self, $path, %arg) = @_;
    my $last_seq = $arg{after};
    my ($over, $failures, $retry_ms) = (0, 0);
    my $until = $arg{until};
    my $time_is_up = sub { defined $until && Time::HiRes::time() >= $until };
    my $outcome = sub { { ok => 1, status => 200, last_seq => $last_seq, @_ } };
    while (1) {
        return $outcome->(until => 1) if $time_is_up->();
        my $seen_before = $last_seq // -1;
        my $deliver = sub {
            my ($frame) = @_;
            my $seq = $frame->{id};
            return unless $seq =~ /\A[0-9]+\z/ && (!defined $last_seq || $seq > $last_seq);    # never twice
            $last_seq = 0 + $seq;
            $over = 1 if $arg{on_frame}->($last_seq, $frame);
            return $over;
        };
        my $response = $self->_stream($path,
            after => $last_seq, deliver => $deliver, access_token => $arg{access_token}, until => $until);
        $retry_ms = $response->{retry_ms} if defined $response->{retry_ms};
        return $outcome->() if $over;    # (reading stopped there: no HTTP status to tell)
        return $outcome->(until => 1) if $time_is_up->();
        # A block with an id but no data moves the position without a frame: resume there.
        my $position = $response->{position};
        $last_seq = 0 + $position
            if defined $position && $position =~ /\A[0-9]+\z/ && (!defined $last_seq || $position > $last_seq);
        # An HTTP answer other than the stream (404, 401...) is final; a dropped
        # connection (599), a 503 or a stream cut short is resumed.
        return { %{ _with($response) }, last_seq => $last_seq }
            if !$response->{ok} && $response->{status} != 599 && $response->{status} != 503;

        my $progress = ($last_seq // -1) > $seen_before;
        my $quiet = $arg{idle_is_fine} && $response->{connected};
        $failures = $progress || $quiet ? 0 : $failures + 1;
        return {
            ok       => 0,
            status   => $response->{status},
            last_seq => $last_seq,
            error    => {
                code    => 'stream_interrupted',
                message => "$arg{what} broke off $failures times in a row"
                    . ($response->{ok} ? '' : ": $response->{error}{message}"),
            },
        } if $failures > $arg{max_retries};
        # Reconnect at once after a stream that made progress; otherwise back off as the
        # stream asked (retry:), capped so a caller is never stuck for long.
        my $delay = $progress ? 0 : _min(($retry_ms // 1000) / 1000, 5) * ($failures || 1);
        $delay = _min($delay, $until - Time::HiRes::time()) if defined $until;
        Time::HiRes::sleep($delay) if $delay > 0;
    }
}

# Open the SSE stream once, feeding each frame to $arg{deliver}; stop reading when it
# returns true or the time $arg{until} passes. The response tells whether the stream
# opened (`connected`), the stream's `retry_ms` hint, and its last dispatched id.
sub _stream {
    my ($self, $path, %arg) = @_;
    my ($sse, $stream_of, $callback_error, $stopped);
    my $after = $arg{after};
    my %headers = (
        Accept => 'text/event-stream',
        %{ $self->{headers} },
        ($after ? ('Last-Event-ID' => $after) : ()),
    );
    my $query = _query({ after => $after, access_token => $arg{access_token} });
    my $until = $arg{until};
    my $raw = $self->_with_deadline($until, sub {
        $self->{http}->request(GET => $self->{base_url} . $path . $query, {
            headers       => \%headers,
            data_callback => sub {
                my ($chunk, $response) = @_;
                # HTTP::Tiny silently repeats a GET once when the connection breaks (RFC
                # 2616 8.1.4): a new response starts a new stream, never the rest of a
                # broken frame.
                if (!$stream_of || $stream_of != $response) {
                    ($sse, $stream_of) = (Gateway::Client::SSE->new, $response);
                }
                # HTTP::Tiny turns a die into a 599 answer; remember the caller's own error
                # so that it propagates instead of looking like a dropped connection.
                eval {
                    for my $frame ($sse->feed($chunk)) {
                        next unless $arg{deliver}->($frame);
                        $stopped = 1;
                        last;
                    }
                    $stopped = 1 if defined $until && Time::HiRes::time() >= $until;
                    1;
                } or do { $callback_error = $@; die $@ };
                die "stopped reading\n" if $stopped;    # ends the request (as a 599)
            },
        });
    });
    die $callback_error if defined $callback_error;
    my $response = _parse($raw);
    $response->{connected} = $sse ? 1 : 0;
    if ($sse) {
        $response->{retry_ms} = $sse->retry;
        $response->{position} = $sse->dispatched_id;
    }
    return $response;
}

sub _with_timeout {
    my ($self, $wait, $code) = @_;
    my $http = $self->{http};
    return $code->() unless $wait && $http->can('timeout');
    my $needed = $wait + $WAIT_SLACK_SECONDS;
    return $code->() if $http->timeout >= $needed;
    return $self->_timed($needed, $code);
}

# A socket silent until `until` (epoch seconds) times out then, not later.
sub _with_deadline {
    my ($self, $until, $code) = @_;
    my $http = $self->{http};
    return $code->() unless defined $until && $http->can('timeout');
    my $left = $until - Time::HiRes::time();
    return $code->() if $http->timeout <= $left;
    return $self->_timed($left > 0.05 ? $left : 0.05, $code);
}

# Run $code with the HTTP client's timeout set to $seconds.
sub _timed {
    my ($self, $seconds, $code) = @_;
    my $http = $self->{http};
    my $before = $http->timeout;
    $http->timeout($seconds);
    my @result = eval { $code->() };
    my $error = $@;
    $http->timeout($before);
    die $error if $error;
    return $result[0];
}

sub _parse {
    my ($raw) = @_;
    my $status = $raw->{status};
    my %response = (ok => $raw->{success} ? 1 : 0, status => 0 + $status, headers => $raw->{headers} // {});
    my $content = $raw->{content} // '';

    if ($status == 599) {
        (my $message = $content) =~ s/\s+\z//;
        $response{error} = { code => 'transport_error', message => $message || 'no answer from the gateway' };
        return \%response;
    }
    if (length $content && ($response{headers}{'content-type'} // '') =~ m{application/json}i) {
        my $body = eval { $JSON->decode($content) };
        $response{body} = $body unless $@;
    }
    unless ($response{ok}) {
        my $error = ref $response{body} eq 'HASH' && $response{body}{error};
        $response{error} = ref $error eq 'HASH' ? $error : {
            code    => 'http_error',
            message => "HTTP $status $raw->{reason}",
        };
    }
    return \%response;
}

# The public response: ok, status, error if any, and the verb's own key(s).
sub _with {
    my ($response, %fields) = @_;
    my %result = (ok => $response->{ok}, status => $response->{status});
    if ($response->{ok}) {
        %result = (%result, %fields);
    }
    else {
        $result{error} = $response->{error};
    }
    return \%result;
}

sub _outcome {
    my ($job) = @_;
    return { ok => 1, status => 200, job => $job, result => $job->{result} } if $job->{status} eq 'succeeded';
    return {
        ok     => 0,
        status => 200,
        job    => $job,
        error  => $job->{error} // { code => $job->{status}, message => "job $job->{id} was $job->{status}" },
    };
}

sub _poll_length {
    my ($give_up_at) = @_;
    my $left = $give_up_at - Time::HiRes::time();
    return $left <= 0 ? 0 : _min($POLL_SECONDS, int($left + 0.999));
}

sub _decode_text {
    my ($text) = @_;
    my $value = eval { JSON::PP->new->allow_nonref->decode($text) };
    return $@ ? $text : $value;
}

sub _query {
    my ($params) = @_;
    my @pairs = map { _escape($_) . '=' . _escape($params->{$_}) }
        grep { defined $params->{$_} } sort keys %{ $params // {} };
    return @pairs ? '?' . join('&', @pairs) : '';
}

sub _escape {
    my ($text) = @_;
    utf8::encode($text);
    $text =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $text;
}

sub _check_name {
    my ($what, $value) = @_;
    croak "$what must be a non-empty string" unless defined $value && !ref $value && length $value;
}

sub _check_options {
    my ($given, $known) = @_;
    my @unknown = grep { !$known->{$_} } sort keys %$given;
    croak "unknown options: @unknown" if @unknown;
    for my $name (qw(wait deadline_seconds)) {
        croak "$name must be a non-negative number"
            if defined $given->{$name} && !(_is_number($given->{$name}) && $given->{$name} >= 0);
    }
}

sub _is_number { defined $_[0] && !ref $_[0] && $_[0] =~ /\A[0-9]+(?:\.[0-9]+)?\z/ }

sub _min { $_[0] < $_[1] ? $_[0] : $_[1] }

1;

__END__

=head1 NAME

Gateway::Client - call operations of the AMQP HTTP gateway from Perl

=head1 SYNOPSIS

    use Gateway::Client;

    my $gateway = Gateway::Client->new(base_url => 'http://127.0.0.1:8000');
    my $answer  = $gateway->call('math.add', { a => 2, b => 3 });
    die "$answer->{error}{code}: $answer->{error}{message}\n" unless $answer->{ok};
    print $answer->{result}{sum}, "\n";    # 5

    # Submit now, come back later; follow the events as they happen.
    my $job = $gateway->submit('report.generate', { title => 'Q3' })->{job};
    $gateway->events($job->{id}, on_event => sub {
        my ($event) = @_;    # { seq => 3, type => 'progress', data => { done => 1, ... } }
        print "$event->{seq} $event->{type}\n";
    });

    # Topics: publish a message; follow a topic's messages as they come.
    $gateway->publish('chat.room.42', { from => 'ann', text => 'hello' });
    $gateway->subscribe('chat.room.42', after => 0, on_message => sub {
        my ($message) = @_;  # { seq => 17, topic => 'chat.room.42', data => { from => 'ann', ... } }
        print "$message->{data}{from}: $message->{data}{text}\n";
    });

=head1 DESCRIPTION

A small client for the gateway's HTTP API v1, built on core modules (L<HTTP::Tiny>,
L<JSON::PP>). L<JSON::Validator> is loaded only for client-side validation.

=head1 RESPONSES

Every verb returns a response hashref; HTTP failures are data, never exceptions.
Exceptions (croak) are kept for misuse: a missing or malformed argument, an unknown option.

    {
        ok     => 1 | 0,
        status => 200,        # the HTTP status; 599 when no HTTP answer came (connection
                              # refused or dropped, timeout), as in HTTP::Tiny
        error  => { code => '...', message => '...', details => [...] },   # only when !ok
        local  => 1,          # only when the client refused without sending (validate => 1)
        ...                   # the verb's own keys, below
    }

C<error> is the gateway's error object (C<{"error": {...}}> unwrapped) when it sent one;
otherwise C<code> is C<transport_error> (status 599), C<http_error> (an answer without a
JSON error body, e.g. from a proxy), or one of the client's own codes documented per verb.

=head1 CONSTRUCTOR

=head2 new(base_url => $url, validate => 0|1, timeout => $seconds, headers => \%headers)

C<base_url> (required) is the gateway's root, e.g. C<http://127.0.0.1:8000>. C<timeout>
(default 60) is how long a socket may stay silent; requests with C<wait> stretch it as
needed. C<validate> (default 0) checks request bodies against the operation's contract
before sending (see C<validate_request> below), and published messages against the
topic's contract (C<validate_message>). C<headers> are sent with every request (e.g.
an C<Authorization> header). C<http> may pass a ready L<HTTP::Tiny> (or compatible)
object.

=head1 VERBS

=head2 ops()

C<GET /v1/ops>. Adds C<ops>: the list of C<< { op, description, href, settings } >>.

=head2 contract($op)

C<GET /v1/ops/{op}>. Adds C<contract>: the operation's JSON Schema. Cached per client.

=head2 submit($op, $body, wait => $s, idempotency_key => $key, deadline_seconds => $s)

C<POST /v1/ops/{op}>: C<$body> is any Perl structure that encodes as JSON. Adds C<job>
(the job resource) and C<location>. C<status> is 202 when the job was accepted (and
not finished within C<wait>), 200 when C<wait> was given and the job finished in time.
C<idempotency_key> sends C<Idempotency-Key>; C<deadline_seconds> sends
C<X-Deadline-Seconds>. With C<< validate => 1 >> an invalid body is refused locally.

=head2 job($id, wait => $s, after => $seq, job_token => $token)

C<GET /v1/jobs/{id}>. Adds C<job>. C<wait> alone waits until the job ends; with C<after>
until it has an event past that C<seq>.

C<job_token> (see JOB TOKENS) reads the job with that token, here and in the job's later
calls.

=head2 call($op, $body, wait => $s, on_progress => sub { my ($progress, $job) = @_ }, ...)

Submits (taking C<submit>'s options), then long-polls C<GET /v1/jobs/{id}?wait=N&after=S>
until the job ends, for at most C<wait> seconds in all (default 300). Unlike the other
verbs, C<ok> here means B<the operation succeeded>: then C<result> holds its result. A
job that failed, was cancelled or expired gives C<< ok => 0 >> with the job's C<error>
(or C<< { code => 'cancelled' | 'expired' } >>); running out of time gives
C<< error => { code => 'timeout' } >>. C<job> always holds the latest job seen, so a
caller can carry on with C<job> or C<events>.

C<on_progress> is called with the job's latest C<progress> whenever it changes. Polls
see the job's latest state, so progress events that come faster than the polls are
coalesced; use C<events> to see every one.

=head2 events($id, on_event => sub { my ($event) = @_ }, after => $seq, max_retries => 5, job_token => $token)

Follows C<GET /v1/jobs/{id}/events> as Server-Sent Events until the terminal event
(C<result>, C<error>, C<cancelled> or C<expired>), calling C<on_event> with each event as
C<< { seq, type, data } >> (C<data> decoded from JSON). C<after> starts past that seq.

If the connection drops (or the gateway answers 503) before the terminal event, it
reconnects with C<Last-Event-ID> set to the last seq delivered, so no event is missed or
delivered twice. It gives up after C<max_retries> consecutive attempts that brought no
new event (C<< error => { code => 'stream_interrupted' } >>).

Adds C<events> (every event delivered, also on failure) and C<last_seq>. A die in
C<on_event> propagates to the caller.

=head2 cancel($id)

C<DELETE /v1/jobs/{id}>. Adds C<job>.

=head2 validate_request($op, $body)

Checks C<$body> against C<definitions.request> of the operation's contract (fetched
once from C<GET /v1/ops/{op}>) with L<JSON::Validator>. Returns nothing when it is valid;
otherwise a response shaped like the gateway's 422:
C<< { ok => 0, status => 422, local => 1, error => { code => 'invalid_request', message,
details => [ { path => '/json/pointer', message }, ... ] } } >>. If the contract cannot
be fetched, that failed response (with C<< local => 1 >>).

=head1 TOPICS

A topic is a stream of JSON messages that anyone may publish to (over HTTP, or straight to
RabbitMQ's C<gateway.topics> exchange from any daemon) and that scripts and browsers
follow. C<schemas/topics/E<lt>nameE<gt>.json> is a family's contract, with
C<definitions.message>; a topic is the contract's name (C<chat.room>: the whole family) or
a key below it (C<chat.room.42>: one room).

=head2 topics()

C<GET /v1/topics>. Adds C<topics>: the list of C<< { name, description, href, events,
settings } >>.

=head2 topic_contract($topic)

C<GET /v1/topics/{topic}>. Adds C<contract>: the contract that applies to the topic. Cached
per client and topic. C<unknown_topic> (404) when no contract covers it, C<invalid_topic>
(400) for a malformed topic (an empty word, C<*>, C<#>...).

=head2 publish($topic, $message, validate => 0|1)

C<POST /v1/topics/{topic}>: C<$message> is any Perl structure that encodes as JSON. Adds
C<topic> and C<message_id>; C<status> 202 means RabbitMQ confirmed it. A message against
the contract is a 422 C<invalid_request> with C<details>, as for operations. C<validate>
(default: the client's) checks it locally first (C<validate_message>) and refuses it
unsent.

=head2 subscribe($topic, on_message => sub { my ($message) = @_ }, after => $seq, max => $n, until => $time, token => $token, max_retries => 5)

Follows C<GET /v1/topics/{topic}/events> as Server-Sent Events, calling C<on_message>
with each message as C<< { seq, topic, data } >> (C<data> decoded from JSON; C<topic> is
the topic subscribed to: a family subscription gets every key's messages, but the stream
does not say which key each came from). C<seq> strictly increases but is not contiguous
(the message's offset in the RabbitMQ stream).

C<after> starts past that seq; C<< after => 0 >> replays every retained message first;
without it, the subscription starts at the next message published. C<token> is a
subscribe token (C<topic_token>), sent as C<?access_token=>.

The stream never ends by itself. It stops, with C<< ok => 1 >>, after C<max> messages
(C<< stopped => 'max' >>) or when the clock reaches C<until> (epoch seconds, as
C<Time::HiRes::time>; C<< stopped => 'until' >>, also while no message comes). A die in
C<on_message> stops it too, and propagates to the caller. Without C<on_message> it needs
C<max> or C<until> (else it croaks: it would never return) and returns the messages as
C<messages>; with C<on_message> they are not kept (a subscriber may run for days).

Like C<events>, it resumes a dropped connection (or a stream the gateway closed, or a 503)
with C<Last-Event-ID> set to the last seq delivered, so no message is missed or delivered
twice; a quiet stream is normal and is simply reopened. It gives up after C<max_retries>
attempts in a row that could not open the stream (C<< error => { code =>
'stream_interrupted' } >>); a 4xx (404 C<unknown_topic>, 401 for an expired token...) ends
it at once. Without C<after> it first asks where the stream stands now (the long-poll
C<GET .../events?wait=0> answers C<next>) and starts there, so even a connection dropped
before the first message resumes with nothing missed.

Adds C<last_seq>, C<count> (messages delivered), C<stopped> (when ok) and, without
C<on_message>, C<messages>.

=head2 topic_token($topic)

C<POST /v1/topics/{topic}/tokens> (needs the C<topics:subscribe> scope for it): a
short-lived, read-only token that opens that one topic's events as C<?access_token=>, for
a browser's C<EventSource>. Adds C<token>, C<topic>, C<expires_at> (epoch seconds) and
C<events> (the stream's path with the token).

=head2 validate_message($topic, $message)

Like C<validate_request>, against C<definitions.message> of the topic's contract (fetched
once from C<GET /v1/topics/{topic}>): nothing when the message is valid, else the 422
shape with the gateway's C<details>.

=head1 JOB TOKENS

With auth on, every job resource carries a C<job_token> that opens that one job's
C<GET /v1/jobs/{id}> and C<GET /v1/jobs/{id}/events> as C<?access_token=> (read-only; see
the gateway's SECURITY.md). C<job> and C<events> take one as C<< job_token => $token >>
and use it for the job's later calls too. A client without an C<Authorization> header of
its own also keeps the C<job_token> of every job resource it receives (C<submit>, C<job>)
and uses it for that job's C<job> and C<events>.

=head1 SEE ALSO

L<Gateway::Client::SSE>, L<Gateway::Worker>, the gateway's README.

=cut
